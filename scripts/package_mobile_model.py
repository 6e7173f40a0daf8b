#!/usr/bin/env python
"""Turn a training run of recipes/mobile_model.yaml into the bundled mobile model (`--model mobile`), and write its
measured numbers into its model card and README.md (run by `make mobile-model` after training).

Steps: stage the repository folder into dualsight_hf/mobile_model (weights, config, code, plots, results); fit the
temperature on the recipe's validation split and store it with an uncertain band; measure there whether bfloat16
changes its answers and store the precision `--dtype auto` uses; evaluate on the recipe's test
split under every degradation and the size / JPEG-quality shortcut check; copy the leave-one-family-out table
(benchmarks/results/leave_one_family_out.json, from `make generalisation`) beside it; generate the model card; fill
README.md's result blocks, the example predictions included.
"""

import argparse
import io
import json
import sys
from pathlib import Path

from dualsight_hf import MOBILE_MODEL_DIR
from dualsight_hf.data.degradations import DEFAULT_LEVELS, parse_perturbation
from dualsight_hf.evaluation.calibration import calibrate_model
from dualsight_hf.evaluation.evaluate import EvaluationData, default_device_predictor, evaluate
from dualsight_hf.evaluation.report import leave_one_family_out_markdown, write_report
from dualsight_hf.hub import build_model_card, precision_markdown, results_markdown, stage_repo_folder
from dualsight_hf.inference.precision import choose_inference_dtype
from dualsight_hf.inference.predictor import Predictor
from dualsight_hf.inference.results import write_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from readme_blocks import write_marked_block  # noqa: E402

REPO_ID = "dualsight-hf/dualsight-mobilenetv2-real-vs-ai"
CARD = {"base_model": "google/mobilenet_v2_1.0_224", "dataset_name": "real-vs-ai test split"}
UNCERTAIN_BAND = 0.1
#: the project's targets for a default model (issue #16): (source, metric, at least) on the test split
TEST_TARGETS = (("cifake-2spi", "accuracy", 0.93), ("diffusiondb-vs-coco", "accuracy", 0.95),
                ("diffusiondb-vs-coco", "auroc", 0.99))
MEAN_HELDOUT_AUROC_TARGET = 0.75
GENERALISATION = REPO / "benchmarks" / "results" / "leave_one_family_out.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/mobile-model", help="the training output folder")
    parser.add_argument("--docs-only", action="store_true", help="only rewrite the model card and README.md from "
                                                                "what the mobile model folder already holds")
    args = parser.parse_args()
    if not args.docs_only:
        measure(args)
    write_docs()


def measure(args) -> None:
    """Stage, calibrate, choose the precision and evaluate: everything that runs the model on the data."""
    stage_repo_folder(args.run, MOBILE_MODEL_DIR, REPO_ID, **CARD)
    for code in MOBILE_MODEL_DIR.glob("*.py"):  # the package is the code of its own folder; `push` writes them
        code.unlink()
    predictor = default_device_predictor(str(MOBILE_MODEL_DIR))
    validation = EvaluationData.of_model(MOBILE_MODEL_DIR, "validation", root=REPO).load(predictor.model.config)
    calibrate_model(predictor, validation, MOBILE_MODEL_DIR, uncertain_band=UNCERTAIN_BAND)
    precision = choose_inference_dtype(MOBILE_MODEL_DIR, validation)
    (MOBILE_MODEL_DIR / "evaluation" / "precision.json").write_text(json.dumps(precision, indent=2))

    predictor = default_device_predictor(str(MOBILE_MODEL_DIR))  # reload: the calibrated config
    test = EvaluationData.of_model(MOBILE_MODEL_DIR, "test", root=REPO).load(predictor.model.config)
    perturbations = [p for name in DEFAULT_LEVELS for p in parse_perturbation(name)]
    result = evaluate(predictor, test, perturbations, group_by="source", check_shortcuts=True)
    write_report(result, MOBILE_MODEL_DIR / "evaluation", title="Robustness and calibration on the test split")


def write_docs() -> None:
    """The model card and README.md's blocks, from the files in the model folder and the model's predictions."""
    if GENERALISATION.exists():
        (MOBILE_MODEL_DIR / "evaluation" / "leave_one_family_out.md").write_text(
            "From `benchmarks/leave_one_family_out.py`:\n\n"
            + leave_one_family_out_markdown(json.loads(GENERALISATION.read_text())))
    build_model_card(MOBILE_MODEL_DIR, REPO_ID, **CARD).save(MOBILE_MODEL_DIR / "README.md")

    readme = REPO / "README.md"
    intro = ("Test split of the recipe (15% of every source and class, never used for model selection), measured by "
             "the training run:\n\n")
    write_marked_block(readme, "mobile-model-results", intro + results_markdown(MOBILE_MODEL_DIR))
    lofo = json.loads(GENERALISATION.read_text()) if GENERALISATION.exists() else None
    write_marked_block(readme, "mobile-model-targets",
                       targets_markdown(json.loads((MOBILE_MODEL_DIR / "all_results.json").read_text()), lofo))
    write_marked_block(readme, "mobile-model-evaluation",
                       (MOBILE_MODEL_DIR / "evaluation" / "report.md").read_text() + "\n" +
                       precision_markdown(MOBILE_MODEL_DIR))
    table = io.StringIO()
    results = Predictor(str(MOBILE_MODEL_DIR)).predict_paths([REPO / "examples"])
    for item in results:
        item.path = str(Path(item.path).relative_to(REPO))
    write_table(results, table)
    write_marked_block(readme, "mobile-model-examples",
                       "`dualsight predict examples/ --model mobile` on the examples (real photos in `examples/real`, Stable Diffusion images in "
                       "`examples/ai_generated`):\n\n```text\n" + table.getvalue() + "```\n")


def targets_markdown(results: dict, lofo: dict | None) -> str:
    """The project's targets for a default model against what its run and the leave-one-family-out table measured."""
    lines = ["| target | measured | images | met |", "|---|---|---|---|"]
    for source, metric, floor in TEST_TARGETS:
        measured = results["test_by_source"][source]
        lines.append(f"| {source} test {metric} >= {floor} | {measured[metric]:.4f} | {measured['count']} | "
                     f"{'yes' if measured[metric] >= floor else '**no**'} |")
    if lofo is not None:
        chosen = lofo["chosen_variant"]
        heldout = lofo["mean_heldout_auroc"][chosen]
        lines.append(f"| mean leave-one-family-out AUROC >= {MEAN_HELDOUT_AUROC_TARGET} ({chosen}) | {heldout:.4f} | "
                     f"{sum(runs[chosen]['test']['count'] for runs in lofo['runs'].values())} | "
                     f"{'yes' if heldout >= MEAN_HELDOUT_AUROC_TARGET else '**no**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
