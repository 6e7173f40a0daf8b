#!/usr/bin/env python
"""Generalisation to generators a model never saw: leave-one-family-out training and evaluation.

The recipe of the mobile model (`recipes/mobile_model.yaml`, all shared sources) is trained once per
(recipe variant, held-out generator family), each run with `--holdout_column source --holdout_value <its sources>`:
training and model selection (the validation split) see only the other families, and the test split is the held-out
family alone. The families are those of `../shared/data` (`FAMILIES`). The variants change what has a reason to
generalise (`VARIANTS`):

- `plain`: every training example once per epoch, the recipe's light blur / JPEG augmentation;
- `balanced`: every (source, class) drawn equally often (`balance_by: source`), so that small families weigh as
  much as CIFAKE;
- `balanced-robust`: balanced, with CNNDetection-style blur and JPEG re-compression on half the training images.

Every run writes its folder under `--out`; a run whose `all_results.json` holds test metrics is not repeated, so an
interrupted table resumes where it stopped. The table (held-out accuracy, balanced accuracy and AUROC per family, and
the in-domain validation AUROC) goes to a JSON file and, with `--readme`, into the README's `leave-one-family-out`
block. The variant for the default model is the best mean held-out AUROC (`choose_variant`); the test split of the
default model's own run is never looked at.

    python benchmarks/leave_one_family_out.py --readme README.md
    python benchmarks/leave_one_family_out.py --epochs 1 --max-train-samples 64 --out /tmp/lofo   # quick look
    python benchmarks/leave_one_family_out.py --epochs 1 --max-train-samples 800 --max-validation-samples 300 \
        --max-test-samples 500 --variants balanced,plain --readme README.md   # the README's table
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from dualsight_hf.evaluation.report import leave_one_family_out_markdown
from dualsight_hf.machine import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_blocks, beside this script
from readme_blocks import write_marked_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: generator family -> the sources (manifest `source` values) that hold it
FAMILIES = {
    "modern photoreal text-to-image": "laboratoriet-realorai",
    "AVT generators (DALL-E 2, Midjourney, SD, GLIDE, Craiyon)": "avt-ai-images",
    "StyleGAN2 faces": "stylegan2-ffhq-faces,whichfaceisreal-tpdne-ffhq",
    "CIFAKE (SD 1.4 vs CIFAR-10, 32x32)": "cifake-2spi",
    "SD 1.x vs COCO": "diffusiondb-vs-coco",
    "DDPM": "ddpm-edit_detect",
}

VARIANTS = {  # changes to the recipe; None removes a setting
    "plain": {"balance_by": None, "jpeg_p": 0.2, "blur_p": 0.1},
    "balanced": {"balance_by": "source", "jpeg_p": 0.2, "blur_p": 0.1},
    "balanced-robust": {"balance_by": "source", "jpeg_p": 0.5, "blur_p": 0.5},
}


def run_settings(recipe: dict, variant: str, sources: str, epochs: float, limits: dict, run_dir: Path) -> dict:
    """
    The training arguments of one (variant, held-out family) run: the recipe with the variant's changes, the
    family held out, and `limits` (`max_train_samples`, `max_validation_samples`, `max_test_samples`: `None` for
    the whole split).
    """
    settings = {**recipe, **VARIANTS[variant], "holdout_column": "source", "holdout_value": sources,
                "output_dir": str(run_dir), "num_train_epochs": epochs, "report_to": "none", **limits}
    return {key: value for key, value in settings.items() if value is not None}


def run_dir_name(variant: str, family: str) -> str:
    """The folder of one run: the variant and the held-out family's first source."""
    return f"{variant}-without-{FAMILIES[family].split(',')[0]}"


def run_recipe(recipe: dict, variant: str, family: str, epochs: float, limits: dict, out: Path) -> dict:
    """Train one (variant, held-out family) run unless its results exist; returns its `all_results.json`."""
    run_dir = out / run_dir_name(variant, family)
    results_file = run_dir / "all_results.json"
    # Trainer writes a first all_results.json (train metrics) before the run's own, complete one
    if not results_file.exists() or "test" not in json.loads(results_file.read_text()):
        settings = run_settings(recipe, variant, FAMILIES[family], epochs, limits, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        print(f"training {run_dir.name} ...", file=sys.stderr, flush=True)
        with open(run_dir / "train.log", "w") as log:
            subprocess.run([sys.executable, str(REPO / "train.py"), str(run_dir / "recipe.yaml")], cwd=REPO,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads(results_file.read_text())


def summarise(results: dict) -> dict:
    """The figures of one run that the table shows."""
    keys = ("accuracy", "balanced_accuracy", "auroc", "count")
    return {
        "test": {key: results["test"][key] for key in keys},
        "test_by_source": {source: {key: metrics[key] for key in keys}
                           for source, metrics in results.get("test_by_source", {}).items()},
        "validation_auroc": results["best_checkpoint"]["validation_value"],
    }


def choose_variant(runs: dict) -> dict:
    """
    The variant for the default model: the best mean AUROC over the held-out families (ties: the better mean
    held-out balanced accuracy). The mean in-domain validation AUROC is reported beside it, not used to choose: the
    families a model trains on are measured on the default model's own test split.
    """
    families = list(runs)
    variants = list(runs[families[0]])
    heldout = {v: sum(runs[f][v]["test"]["auroc"] for f in families) / len(families) for v in variants}
    balanced = {v: sum(runs[f][v]["test"]["balanced_accuracy"] for f in families) / len(families) for v in variants}
    in_domain = {v: sum(runs[f][v]["validation_auroc"] for f in families) / len(families) for v in variants}
    return {"mean_heldout_auroc": heldout, "mean_heldout_balanced_accuracy": balanced,
            "mean_in_domain_auroc": in_domain,
            "chosen_variant": max(variants, key=lambda v: (heldout[v], balanced[v]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/mobile_model.yaml")
    parser.add_argument("--epochs", type=float, default=None, help="epochs per run (default: the recipe's)")
    for split in ("train", "validation", "test"):
        parser.add_argument(f"--max-{split}-samples", type=int, default=None,
                            help=f"cap the {split} examples of each run (a cheaper protocol, or a quick look)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--out", default="outputs/leave-one-family-out", help="folder of the runs")
    parser.add_argument("--json", default="benchmarks/results/leave_one_family_out.json")
    parser.add_argument("--readme", default=None, help="write the table into this README's block")
    args = parser.parse_args(argv)

    recipe = yaml.safe_load((REPO / args.recipe).read_text())
    epochs = args.epochs or recipe["num_train_epochs"]
    variants = args.variants.split(",")
    limits = {f"max_{split}_samples": getattr(args, f"max_{split}_samples") for split in ("train", "validation", "test")}
    runs = {family: {variant: summarise(run_recipe(recipe, variant, family, epochs, limits, REPO / args.out))
                     for variant in variants}
            for family in FAMILIES}
    report = {"recipe": args.recipe, "epochs": epochs, "limits": limits,
              "families": FAMILIES, "variants": variants, "runs": runs, **choose_variant(runs),
              "machine": describe_machine()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    table = leave_one_family_out_markdown(report)
    print(table)
    if args.readme:
        write_marked_block(args.readme, "leave-one-family-out", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
