#!/usr/bin/env python
"""The adaptation curve in the leave-one-family-out protocol: how many images of a generator family that a model
never saw does `dualsight adapt` need, and what does the model forget meanwhile?

For each family held out of a base model's training (the `balanced` runs of `benchmarks/leave_one_family_out.py`,
kept in `outputs/leave-one-family-out`; `make generalisation` trains them):

- the family's images are those the base run kept as its test split (it never trained on them); half of each class
  is held back for measuring (the same images at every shot count), and `dualsight adapt` trains on 8, 32 and 128
  of the rest per class (fewer where the family has fewer), with a replay sample of the base run's own train split;
- held-out figures: AUROC and balanced accuracy on the held-back images, before (0 shots) and after;
- forgetting: AUROC on every other family's test images (the default model's recorded test split, at most
  `--other-images` per family) before and after; the largest drop is reported;
- the wall time of each adaptation on this machine.

Results are written per family as they finish (`results/adaptation_curve-<machine>.json`), so an interrupted run
resumes; with `--readme` the table goes into the README's `adaptation-curve` block.

    python benchmarks/adaptation_curve.py --readme README.md      # about 5 minutes per family on 2 CPU cores

`--variant clip` measures the CLIP model instead (`make fit-default-model`): its bases are the CLIP model's heads fitted
without each family (`python scripts/build_clip_model.py --holdout SOURCES --out outputs/clip-leave-one-family-out/
clip-without-SOURCE`), its results go to `results/adaptation_curve-clip-<machine>.json` and the README's
`adaptation-curve-clip` block. `--train refit` adapts with `dualsight adapt --train refit` (the linear head refitted
in closed form) and adds `-refit` to the results file and the block.
"""

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import datasets

from dualsight_hf import MOBILE_MODEL_DIR
from dualsight_hf.evaluation.evaluate import EvaluationData
from dualsight_hf.machine import describe_machine, machine_line, machine_slug
from dualsight_hf.models.loading import load_model
from dualsight_hf.training.adaptation import REAL_LABEL, adapt, measure, recorded_replay

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
sys.path.insert(0, str(Path(__file__).parent))
from leave_one_family_out import FAMILIES, run_dir_name  # noqa: E402
from readme_blocks import write_marked_block  # noqa: E402


def family_manifests(table: datasets.Dataset, config, folder: Path) -> tuple[str, str]:
    """Manifests (absolute paths) of a table's AI-generated and real images."""
    real_id = config.label2id[REAL_LABEL]
    paths = {"fake": [], "real": []}
    for image, label in zip(table.with_format(None)["image"], table["label"]):
        paths["real" if label == real_id else "fake"].append(str(Path(image).resolve()))
    written = []
    for name, images in paths.items():
        manifest = folder / f"{name}.csv"
        manifest.write_text("path,label\n" + "".join(f"{image},{name}\n" for image in images))
        written.append(str(manifest))
    return written[0], written[1]


def other_families(family: str, config, limit: int) -> dict[str, datasets.Dataset]:
    """Test images of every other family (the default model's recorded test split), at most `limit` each, half of
    each class where the family has them (AUROC needs both)."""
    test = EvaluationData.of_model(MOBILE_MODEL_DIR, "test", root=REPO).load(config)
    tables = {}
    for other, sources in FAMILIES.items():
        if other == family:
            continue
        rows = [i for i, source in enumerate(test["source"]) if source in sources.split(",")]
        by_class = [[i for i in rows if test[i]["label"] == label] for label in sorted(set(test["label"]))]
        chosen = [i for pair in itertools.zip_longest(*by_class) for i in pair if i is not None][:limit]
        tables[other] = test.select(sorted(chosen))
    return tables


def run_family(family: str, base: Path, shots: list[int], other_images: int, seed: int, part: str = "head") -> dict:
    config = load_model(str(base)).config
    held_out = EvaluationData.of_model(base, "test", root=REPO).load(config)
    others = other_families(family, config, other_images)
    replay = recorded_replay(str(base), root=REPO)
    before_others = {name: measure(str(base), table, None)[0]["auroc"] for name, table in others.items()}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        fake, real = family_manifests(held_out, config, Path(scratch))
        for count in shots:
            out = Path(scratch) / f"adapted-{count}"
            report = adapt(str(base), [fake], [real], str(out), shots=count, replay=replay, held_back=0.5,
                           seed=seed, part=part, progress=False)
            after_others = {name: measure(str(out), table, None)[0]["auroc"] for name, table in others.items()}
            changes = {name: after_others[name] - before_others[name] for name in others}
            rows.append({"shots": count, "trained": report.shots, "held_back": report.held_back,
                         "before": report.before, "after": report.after, "seconds": report.seconds,
                         "other_families_auroc_change": changes,
                         "largest_drop": max(0.0, -min(changes.values())),  # every family has both classes
                         "false_positive_rate": report.false_positive_rate, "warnings": report.warnings})
            print(f"{family}: {count} shots, AUROC {report.before['auroc']:.3f} -> {report.after['auroc']:.3f}, "
                  f"largest drop elsewhere {rows[-1]['largest_drop']:.3f}, {report.seconds:.0f} s",
                  file=sys.stderr, flush=True)
    return {"base": str(base), "runs": rows, "other_images": other_images}


#: the base models of each variant: how the table names them
BASES = {"balanced": "the `balanced` leave-one-family-out runs, 1 epoch of 800 images",
         "clip": "the CLIP model's heads fitted without the family, `scripts/build_clip_model.py --holdout`"}


#: how the table says what `dualsight adapt --train` did, beyond the head-only default
PARTS_SAID = {"refit": "the linear head refitted by logistic regression"}


def markdown(report: dict) -> str:
    variant, part = report.get("variant", "balanced"), report.get("part", "head")
    how = "head only" if part == "head" else f"`--train {part}`: " + PARTS_SAID[part]
    lines = [f"Measured by `benchmarks/adaptation_curve.py` on {machine_line(report['machine'])} ({report['date']}): "
             f"each family held out of a base model's training ({BASES[variant]}), then `dualsight adapt` ({how}, "
             "replay of the base run's train split) with N of its "
             "images per class; AUROC and balanced accuracy on half of the family's images held back, the largest "
             f"AUROC drop on the other families' test images (at most {report['other_images']} each), and the "
             "adaptation's wall time; the false-positive rate on 64 real photos of the replay data not trained on.\n",
             "| held-out family | shots per class | AUROC before → after | balanced accuracy before → after | "
             "largest drop elsewhere | false positives on replayed real photos | seconds |",
             "|---|---|---|---|---|---|---|"]
    for family, result in report["families"].items():
        for run in result["runs"]:
            trained = min(run["trained"].values())
            lines.append(f"| {family} | {run['shots']}" + (f" ({trained} available)" if trained < run["shots"] else "")
                         + f" | {run['before']['auroc']:.3f} → {run['after']['auroc']:.3f} | "
                         f"{run['before']['balanced_accuracy']:.3f} → {run['after']['balanced_accuracy']:.3f} | "
                         f"{abs(run['largest_drop']):.3f} | {run['false_positive_rate']['before']:.3f} → "
                         f"{run['false_positive_rate']['after']:.3f} | {run['seconds']:.0f} |")
    missing = [family for family in FAMILIES if family not in report["families"]]
    if missing:
        lines.append(f"\nNot measured yet: {', '.join(missing)} (the benchmark resumes from the families written).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(BASES), default="balanced", help="which base models")
    parser.add_argument("--runs", default=None, help="the folder of the base runs (default: outputs/"
                                                     "leave-one-family-out, or outputs/clip-leave-one-family-out)")
    parser.add_argument("--families", nargs="*", default=None, help="families to measure (default: all)")
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--other-images", type=int, default=60, help="test images per other family (forgetting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", choices=("head", "refit"), default="head", help="what `dualsight adapt` trains "
                        "(refit: results and README block get the suffix -refit)")
    parser.add_argument("--readme", default=None, help="write the table into this README's adaptation-curve block")
    args = parser.parse_args()
    machine = describe_machine()
    suffix = ("" if args.variant == "balanced" else f"-{args.variant}") + ("" if args.train == "head" else
                                                                         f"-{args.train}")
    runs = Path(args.runs or REPO / "outputs" / ("leave-one-family-out" if args.variant == "balanced"
                                                  else f"{args.variant}-leave-one-family-out"))
    results_file = RESULTS / f"adaptation_curve{suffix}-{machine_slug(machine)}.json"
    report = json.loads(results_file.read_text()) if results_file.exists() else {"families": {}}
    report.update(machine=machine, date=time.strftime("%Y-%m-%d"), other_images=args.other_images,
                  variant=args.variant, part=args.train)
    for family in args.families or list(FAMILIES):
        if family in report["families"]:
            continue
        base = runs / run_dir_name(args.variant, family)
        if not (base / "all_results.json").exists():
            print(f"skipping {family}: no base run in {base}", file=sys.stderr)
            continue
        report["families"][family] = run_family(family, base, args.shots, args.other_images, args.seed, args.train)
        RESULTS.mkdir(exist_ok=True)
        results_file.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if args.readme:
        write_marked_block(args.readme, f"adaptation-curve{suffix}", markdown(report))


if __name__ == "__main__":
    main()
