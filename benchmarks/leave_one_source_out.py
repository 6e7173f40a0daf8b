#!/usr/bin/env python
"""Generalisation to generators a model never saw: leave-one-source-out training and evaluation.

The recipe of the shipped default model (`recipes/default_model.yaml`) is trained once per (model variant, held-out
group), each run with `--holdout_column source --holdout_value <group>`: training and model selection (validation
split) see only the other sources, and the test split is the held-out group alone. The two directions of
`../shared/data/real-vs-ai` are its two generator families: Stable Diffusion (`diffusiondb-vs-coco`, `cifake-2spi`)
and DDPM (`ddpm-edit_detect`). Variants:

- `semantic`: the recipe without an artifact stream (the MobileNetV2 backbone, both heads);
- `artifact`: the artifact stream alone feeds the authenticity head (`artifact_stream.semantic_features: false`;
  no object head, so the backbone is not run);
- `both`: the artifact stream beside the backbone (`artifact_stream: {}`, its default settings).

Every run writes its folder under `--out`; a run whose `all_results.json` exists is not repeated. The table (test
accuracy and AUROC on the held-out group, per held-out source, and the validation AUROC on the training sources)
goes to a JSON file and, with `--readme`, into the README's `leave-one-source-out` block.

    python benchmarks/leave_one_source_out.py --readme README.md     # about 40 minutes on 2 CPU cores
    python benchmarks/leave_one_source_out.py --epochs 1 --max-train-samples 64 --out /tmp/loso   # quick look
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from dualsight_hf.evaluation import leave_one_source_out_markdown
from dualsight_hf.hub import write_marked_block
from dualsight_hf.machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
DIRECTIONS = {"ddpm-edit_detect": "DDPM held out (trained on Stable Diffusion sources)",
              "diffusiondb-vs-coco,cifake-2spi": "Stable Diffusion held out (trained on DDPM)"}
VARIANTS = {  # changes to the recipe; None removes a setting
    "semantic": {"artifact_stream": None},
    "artifact": {"artifact_stream": {"semantic_features": False}, "object_labels": "none", "objects_file": None},
    "both": {"artifact_stream": {}},
}


def run_settings(recipe: dict, variant: str, holdout: str, epochs: float, max_train_samples: int | None,
                 run_dir: Path) -> dict:
    """The training arguments of one (variant, held-out group) run: the recipe with the variant's changes."""
    settings = {**recipe, **VARIANTS[variant], "holdout_column": "source", "holdout_value": holdout,
                "output_dir": str(run_dir), "num_train_epochs": epochs, "report_to": "none"}
    if max_train_samples:
        settings["max_train_samples"] = max_train_samples
    return {key: value for key, value in settings.items() if value is not None}


def run_recipe(recipe: dict, variant: str, holdout: str, epochs: float, max_train_samples: int | None,
               out: Path) -> dict:
    """Train one (variant, held-out group) run unless its results exist; returns its `all_results.json`."""
    run_dir = out / f"{variant}-without-{holdout.replace(',', '+')}"
    results_file = run_dir / "all_results.json"
    # Trainer writes a first all_results.json (train metrics) before the run's own, complete one
    if not results_file.exists() or "test" not in json.loads(results_file.read_text()):
        settings = run_settings(recipe, variant, holdout, epochs, max_train_samples, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        print(f"training {run_dir.name} ...", file=sys.stderr, flush=True)
        with open(run_dir / "train.log", "w") as log:
            subprocess.run([sys.executable, str(REPO / "train.py"), str(run_dir / "recipe.yaml")], cwd=REPO,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads(results_file.read_text())


def summarise(results: dict) -> dict:
    """The figures of one run that the table shows."""
    return {
        "test": {key: results["test"][key] for key in ("accuracy", "auroc", "count")},
        "test_by_source": {source: {key: metrics[key] for key in ("accuracy", "auroc", "count")}
                           for source, metrics in results.get("test_by_source", {}).items()},
        "validation_auroc": results["best_checkpoint"]["validation_value"],
    }


def choose_variant(runs: dict) -> dict:
    """
    The variant with the best mean held-out AUROC, and the one for the default model: the best mean held-out AUROC
    among the variants whose mean in-domain validation AUROC is no lower than the semantic backbone's (the default
    model must not get worse on the sources it is trained on).
    """
    holdouts = list(runs)
    variants = list(runs[holdouts[0]])
    heldout = {v: sum(runs[h][v]["test"]["auroc"] for h in holdouts) / len(holdouts) for v in variants}
    in_domain = {v: sum(runs[h][v]["validation_auroc"] for h in holdouts) / len(holdouts) for v in variants}
    floor = in_domain.get("semantic", min(in_domain.values()))
    eligible = [v for v in variants if in_domain[v] >= floor]
    return {"mean_heldout_auroc": heldout, "mean_in_domain_auroc": in_domain,
            "best_variant": max(heldout, key=heldout.get),
            "chosen_variant": max(eligible, key=heldout.get)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/default_model.yaml")
    parser.add_argument("--epochs", type=float, default=None, help="epochs per run (default: the recipe's)")
    parser.add_argument("--max-train-samples", type=int, default=None, help="cap the training examples (a quick look)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--out", default="outputs/leave-one-source-out", help="folder of the runs")
    parser.add_argument("--json", default="benchmarks/results/leave_one_source_out.json")
    parser.add_argument("--readme", default=None, help="write the table into this README's block")
    args = parser.parse_args(argv)

    recipe = yaml.safe_load((REPO / args.recipe).read_text())
    epochs = args.epochs or recipe["num_train_epochs"]
    variants = args.variants.split(",")
    runs = {holdout: {variant: summarise(run_recipe(recipe, variant, holdout, epochs, args.max_train_samples,
                                                    REPO / args.out))
                      for variant in variants}
            for holdout in DIRECTIONS}
    report = {"recipe": args.recipe, "epochs": epochs, "max_train_samples": args.max_train_samples,
              "directions": DIRECTIONS, "variants": variants, "runs": runs, **choose_variant(runs),
              "machine": describe_machine()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    table = leave_one_source_out_markdown(report)
    print(table)
    if args.readme:
        write_marked_block(args.readme, "leave-one-source-out", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
