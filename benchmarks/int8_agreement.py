#!/usr/bin/env python
"""Does `--dtype int8` change the mobile model's answers, and does `--backend onnxruntime`? Measured on ../shared, not
assumed.

The mobile model is quantized as `dualsight predict --dtype int8` does it (static int8, depthwise convolutions kept
in float32), calibrated on 64 images of the training split, then compared with float32 on the validation and test
splits (`precision.compare_precisions`): the share of decisions that stay the same and the AUROC of both; then the
same comparison for ONNX Runtime (float32) against torch. The int8
kernels differ between CPUs (AVX512-VNNI, AMX, ...), and so do the decisions int8 moves: the result goes to
`results/int8_agreement-<machine>.json`, one file per machine, and, with `--readme`, into the README's
`int8-agreement` block.

    python benchmarks/int8_agreement.py --readme README.md     # about 5 minutes on 2 CPU cores
"""

import argparse
import json
import sys
import time
from pathlib import Path

from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig
from dualsight_hf.evaluation.evaluate import EvaluationData
from dualsight_hf.inference.precision import (
    MAX_AUROC_DIFFERENCE,
    MIN_DECISION_AGREEMENT,
    compare_precisions,
    reduced_precision_is_safe,
)
from dualsight_hf.machine import describe_machine, machine_line, machine_slug
from dualsight_hf.models.images import image_source, load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_blocks, beside this script
from readme_blocks import write_marked_block  # noqa: E402

RESULTS = Path(__file__).with_name("results")
REPO = Path(__file__).resolve().parents[1]
CALIBRATION_IMAGES = 64


def default_model_split(name: str):
    """One split of the shared data, as the mobile model's training run made it (its recorded sources and split)."""
    return EvaluationData.of_model(MOBILE_MODEL_DIR, name, root=REPO).load(
        DualSightConfig.from_pretrained(MOBILE_MODEL_DIR))


def calibration_images(train, count: int = CALIBRATION_IMAGES) -> list:
    """`count` training images, drawn with a fixed seed: the same calibration set on every run."""
    rows = train.shuffle(seed=0).select(range(count)).with_format(None)
    return [load_image(image_source(source)) for source in rows["image"]]


def measure(splits_to_compare=("validation", "test"), onnxruntime: bool = True) -> dict:
    """int8 against float32 on each split (`splits`), and with `onnxruntime`, ONNX Runtime against torch
    (`onnxruntime_splits`)."""
    calibration = calibration_images(default_model_split("train"))
    report = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"),
              "calibration_images": len(calibration), "splits": {}}
    if onnxruntime:
        report["onnxruntime_splits"] = {}
    for name in splits_to_compare:
        split = default_model_split(name)
        comparison = compare_precisions(MOBILE_MODEL_DIR, split, reduced="int8", calibration=calibration)
        report["splits"][name] = {**comparison, "unchanged_answers": reduced_precision_is_safe(comparison)}
        if onnxruntime:
            comparison = compare_precisions(MOBILE_MODEL_DIR, split, reduced="float32", backend="onnxruntime")
            report["onnxruntime_splits"][name] = {**comparison,
                                                  "unchanged_answers": reduced_precision_is_safe(comparison)}
    return report


def results_path(machine: dict) -> Path:
    """Where the record of `machine` goes."""
    return RESULTS / f"int8_agreement-{machine_slug(machine)}.json"


def markdown(report: dict) -> str:
    lines = [f"Measured by `benchmarks/int8_agreement.py` on {machine_line(report['machine'])} ({report['date']}): "
             f"the mobile model in int8 (calibrated on {report['calibration_images']} training images) against "
             "float32" + (", and through ONNX Runtime (`--backend onnxruntime`, float32) against torch"
                          if "onnxruntime_splits" in report else "") + ".\n",
             "| mode | split | images | decisions unchanged | AUROC float32 | AUROC of the mode | largest probability "
             f"change | within {MIN_DECISION_AGREEMENT:.1%} / {MAX_AUROC_DIFFERENCE} |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, splits in (("int8", report["splits"]), ("onnxruntime", report.get("onnxruntime_splits", {}))):
        for name, result in splits.items():
            lines.append(f"| {mode} | {name} | {result['count']} | {result['agreement']:.1%} | "
                         f"{result['auroc_float32']:.4f} | {result[f'auroc_{mode}']:.4f} | "
                         f"{result['max_probability_difference']:.3f} | "
                         f"{'yes' if result['unchanged_answers'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: results/int8_agreement-<machine>.json")
    parser.add_argument("--readme", default=None, help="also write the table into this README's int8-agreement block")
    args = parser.parse_args()
    report = measure()
    out = args.out or results_path(report["machine"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if args.readme:
        write_marked_block(args.readme, "int8-agreement", markdown(report))


if __name__ == "__main__":
    main()
