#!/usr/bin/env python
"""What few-shot adaptation can reach on the CLIP model's features (issue #23): the adaptation curve of the
leave-one-family-out protocol, with the CLIP model's own head recipe refitted instead of `dualsight adapt`'s
fine-tuning.

For each generator family of `../shared/data` (`leave_one_family_out.FAMILIES`):
1. base: the CLIP model's authenticity head (`scripts/build_clip_model.fit_authenticity`: logistic regression on the
   frozen block 4+6+8+10 features, C by validation AUROC, threshold by validation accuracy) fitted on the train rows
   of the other families, C chosen on their validation rows: a model that never saw the family;
2. half of the family's images (all splits, per class, seeded) are held back for the before/after figures; from the
   other half, N images per class are drawn (8, 32, 128);
3. adapted: the same recipe refitted on the other families' train rows (the replay: all of them) plus the N shots,
   repeated so that they weigh a fifth of the training set, C again chosen on the other families' validation rows;
4. measured: AUROC and balanced accuracy on the held-back half, the largest AUROC drop on another family's test rows
   (forgetting), the false-positive rate on the other families' real test photos, and the refit's wall time.

It reads the feature cache of `make fit-default-model` (`~/.cache/dualsight/clip-model-build/features.npz`): no image is decoded and the
shipped models are not changed. Results: `benchmarks/results/clip_adaptation_probe.json` and, with `--readme`, the
README's `clip-adaptation-probe` block.

    python benchmarks/clip_adaptation_probe.py --readme README.md
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

from build_clip_model import WORK, fit_authenticity, read_feature_cache, split_arrays  # noqa: E402
from leave_one_family_out import FAMILIES  # noqa: E402
from readme_blocks import write_marked_block  # noqa: E402

from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig  # noqa: E402
from dualsight_hf.evaluation.evaluate import EvaluationData  # noqa: E402
from dualsight_hf.evaluation.metrics import authenticity_metrics  # noqa: E402
from dualsight_hf.machine import describe_machine, machine_line  # noqa: E402

SHOTS = (8, 32, 128)
#: the shots, repeated, make this share of the refit's training rows
SHOT_SHARE = 0.2
RESULTS = REPO / "benchmarks" / "results" / "clip_adaptation_probe.json"


def load_splits(cache: Path) -> dict:
    """`{split: (features, labels, sources)}` of the default model's split, from the feature cache."""
    config = DualSightConfig.from_pretrained(MOBILE_MODEL_DIR)
    base = dataclasses.replace(EvaluationData.of_model(MOBILE_MODEL_DIR, "test", root=REPO), objects_file=None)
    features = read_feature_cache(cache)
    splits = {}
    for name in ("train", "validation", "test"):
        arrays = split_arrays(dataclasses.replace(base, split=name).load(config), features)
        splits[name] = (arrays["x"], arrays["y"], arrays["source"])
    return splits


def scores(fit, x: np.ndarray) -> np.ndarray:
    return x @ fit.weight + fit.bias


def figures(fit, x, y) -> dict:
    z = scores(fit, x)
    metrics = authenticity_metrics(np.stack([-z / 2, z / 2], axis=1), y)
    return {key: metrics[key] for key in ("auroc", "balanced_accuracy", "count")}


def family_curve(splits: dict, sources: list[str], seed: int) -> dict:
    """The base, the held-back half and the adapted fits for one held-out family."""
    (x_train, y_train, _), (x_val, y_val, _), (x_test, y_test, s_test) = (
        splits["train"], splits["validation"], splits["test"])
    inside = {name: np.isin(s, sources) for name, (_, _, s) in splits.items()}
    replay_x, replay_y = x_train[~inside["train"]], y_train[~inside["train"]]
    val_x, val_y = x_val[~inside["validation"]], y_val[~inside["validation"]]
    base = fit_authenticity(replay_x, replay_y, val_x, val_y)

    family_x = np.concatenate([split[0][inside[name]] for name, split in splits.items()])
    family_y = np.concatenate([split[1][inside[name]] for name, split in splits.items()])
    rng = np.random.default_rng(seed)
    pool, held = [], []
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(family_y == label))
        held.append(rows[: len(rows) // 2])
        pool.append(rows[len(rows) // 2:])
    held = np.concatenate(held)
    others = {family: np.isin(s_test, other.split(",")) for family, other in FAMILIES.items()
              if other.split(",") != sources}
    real_others = ~np.isin(s_test, sources) & (y_test == 0)

    def forgetting(fit) -> dict:
        return {family: figures(fit, x_test[rows], y_test[rows])["auroc"] for family, rows in others.items()}

    def false_positive_rate(fit) -> float:
        return float((scores(fit, x_test[real_others]) >= 0).mean())

    before = {"held_back": figures(base, family_x[held], family_y[held]), "others": forgetting(base),
              "false_positive_rate": false_positive_rate(base)}
    rows = []
    for shots in SHOTS:
        chosen = np.concatenate([rows_of_class[:shots] for rows_of_class in pool])
        repeat = max(1, round(SHOT_SHARE * len(replay_y) / ((1 - SHOT_SHARE) * len(chosen))))
        started = time.perf_counter()
        adapted = fit_authenticity(np.concatenate([replay_x] + [family_x[chosen]] * repeat),
                                   np.concatenate([replay_y] + [family_y[chosen]] * repeat), val_x, val_y)
        seconds = time.perf_counter() - started
        after_others = forgetting(adapted)
        rows.append({"shots_per_class": {str(label): int((family_y[chosen] == label).sum()) for label in (0, 1)},
                     "asked": shots, "held_back": figures(adapted, family_x[held], family_y[held]),
                     "largest_drop_elsewhere": max(before["others"][f] - after_others[f] for f in after_others),
                     "false_positive_rate": false_positive_rate(adapted), "seconds": seconds,
                     "C": adapted.settings["C"]})
    return {"sources": sources, "before": before, "after": rows}


def markdown(report: dict) -> str:
    lines = [f"Measured by `benchmarks/clip_adaptation_probe.py` on {report['machine']}: for each family, the CLIP "
             "model's head recipe fitted without it (the base), then refitted with N of its images per class added "
             "to the replay of every other family's train rows (the shots repeated to a fifth of the rows); AUROC and "
             "balanced accuracy on half of the family's images held back, the largest AUROC drop on another "
             "family's test rows, the false-positive rate on the other families' real test photos, and the refit's "
             "wall time (features cached, so no image is decoded).", "",
             "| held-out family | shots per class | AUROC before → after | balanced accuracy before → after | "
             "largest drop elsewhere | false positives on other real photos | seconds |",
             "|---|---|---|---|---|---|---|"]
    for family, curve in report["families"].items():
        before = curve["before"]
        for row in curve["after"]:
            have = min(row["shots_per_class"].values())
            shots = f"{row['asked']}" + (f" ({have} available)" if have < row["asked"] else "")
            lines.append(
                f"| {family} | {shots} | {before['held_back']['auroc']:.3f} → {row['held_back']['auroc']:.3f} | "
                f"{before['held_back']['balanced_accuracy']:.3f} → {row['held_back']['balanced_accuracy']:.3f} | "
                f"{row['largest_drop_elsewhere']:.3f} | {before['false_positive_rate']:.3f} → "
                f"{row['false_positive_rate']:.3f} | {row['seconds']:.1f} |")
    at_32 = [row for curve in report["families"].values() for row in curve["after"] if row["asked"] == 32]
    reached = sum(row["held_back"]["auroc"] >= 0.95 for row in at_32)
    kept = sum(row["largest_drop_elsewhere"] <= 0.01 for row in at_32)
    lines += ["", f"At 32 shots, {reached} of {len(at_32)} families reach AUROC 0.95 on their held-back half, and "
              f"{kept} of {len(at_32)} refits keep every other family within 0.01 AUROC."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", default=str(WORK / "features.npz"),
                        help="the feature cache that `make fit-default-model` writes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme", help="write the table into this Markdown file's clip-adaptation-probe block")
    args = parser.parse_args(argv)
    if not Path(args.features).exists():
        parser.error(f"{args.features} is missing: run `make fit-default-model` first")
    splits = load_splits(Path(args.features))
    report = {"machine": machine_line(describe_machine()), "seed": args.seed, "shot_share": SHOT_SHARE,
              "families": {}}
    for family, sources in FAMILIES.items():
        report["families"][family] = family_curve(splits, sources.split(","), args.seed)
        print(f"{family}: done", file=sys.stderr, flush=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    text = markdown(report)
    print(text)
    if args.readme:
        write_marked_block(args.readme, "clip-adaptation-probe", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
