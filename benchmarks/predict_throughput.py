#!/usr/bin/env python
"""Throughput and memory of `dualsight predict` against the stock transformers pipeline and the forward-only ceiling.

For each model (a ResNet-50 DualSight model with random weights, and the bundled mobile model, MobileNetV2 + artifact stream), on the same folder
of 512x512 JPEGs, interleaved over several rounds:

1. baseline: `transformers.pipeline("image-classification")` (the stock `ImageClassificationPipeline`, same model and
   processor, float32 as the pipeline loads it, `batch_size` set);
2. `dualsight predict` with its defaults (the `Predictor` streaming the folder, results written as JSON lines);
3. the model's forward alone on pre-made tensors, same batch size and dtype as 2 (the ceiling for end-to-end);
4. `dualsight predict --compile` (torch.compile; its one-off compilation excluded) and its forward alone;
5. `dualsight predict --dtype int8` (static int8, calibrated on 32 of the images) and its forward alone: opt-in,
   since it changes the answers more than bfloat16 (see the README);
6. `dualsight predict --backend onnxruntime` (float32, the export made before timing) and its forward alone;
7. reading and preprocessing alone (no model), the work that end-to-end adds to the forward pass.

Whether a mode changes the answers is measured on real images, not on these synthetic ones (which every mode labels
alike): `benchmarks/int8_agreement.py`.

Then peak resident memory of `dualsight predict` (a fresh process each) on N small and N large folders.
Prints the ratios and writes everything to a JSON file with the machine it ran on.

    python benchmarks/predict_throughput.py                       # full run (about 30 minutes on 2 CPU cores)
    python benchmarks/predict_throughput.py --images 32 --rounds 1 --memory-images 50 500   # quick look
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import ImageClassificationPipeline, ResNetConfig, pipeline

from dualsight_hf import MOBILE_MODEL_DIR, DualSightConfig, DualSightForImageClassification, load_model
from dualsight_hf.inference.predictor import Predictor, PreprocessedInputs, iter_inputs
from dualsight_hf.inference.results import ResultWriter
from dualsight_hf.machine import describe_machine, machine_line, machine_slug
from dualsight_hf.models.image_processing import image_processor_for_backbone
from dualsight_hf.models.loading import load_image_processor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_blocks, beside this script
from readme_blocks import write_marked_block  # noqa: E402

RESULTS = Path(__file__).with_name("results")


def make_jpegs(folder: Path, count: int, size: int = 512) -> Path:
    """`count` distinct 512x512 photo-like JPEGs (smooth colour fields plus noise), made once."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = len(list(folder.glob("*.jpg")))
    rng = np.random.default_rng(0)
    base = np.stack(np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size)), -1)
    for i in range(existing, count):
        colours = rng.random((3, 3))
        image = (base[..., :1] * colours[0] + base[..., 1:] * colours[1] + colours[2]) / 2
        image = np.clip(image * 255 + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def resnet50_folder(folder: Path) -> Path:
    """A ResNet-50 DualSight model with random weights (20 object classes) and its processor."""
    if not (folder / "model.safetensors").exists():
        torch.manual_seed(0)
        model = DualSightForImageClassification(DualSightConfig(backbone_config=ResNetConfig(), num_object_labels=20))
        model.save_pretrained(folder)
        image_processor_for_backbone(model.config.backbone_config).save_pretrained(folder)
    return folder


def time_stock_pipeline(model_dir: Path, images: Path, batch_size: int) -> float:
    model = load_model(str(model_dir)).eval()
    classifier = pipeline("image-classification", model=model, image_processor=load_image_processor(str(model_dir)),
                          pipeline_class=ImageClassificationPipeline, batch_size=batch_size)
    files = sorted(str(p) for p in images.glob("*.jpg"))
    start = time.perf_counter()
    outputs = classifier(files, batch_size=batch_size)
    elapsed = time.perf_counter() - start
    assert len(outputs) == len(files)
    return len(files) / elapsed


#: The ways `dualsight predict` runs, as `Predictor` arguments: its defaults, `--compile`, `--dtype int8`
#: (calibrated on the first `CALIBRATION_IMAGES` images of the folder; opt-in, since it changes the answers) and
#: `--backend onnxruntime`.
VARIANTS = {"dualsight_predict": {}, "dualsight_predict_compiled": {"compile": True},
            "dualsight_predict_int8": {"dtype": "int8"}, "dualsight_predict_onnxruntime": {"backend": "onnxruntime"}}
CALIBRATION_IMAGES = 32


def make_predictor(model_dir: Path, images: Path, batch_size: int, **variant) -> Predictor:
    """A `Predictor` for one variant, warmed up on one batch (compilation, once per process, is not part of the
    steady-state throughput)."""
    files = sorted(images.glob("*.jpg"))
    calibration = files[:CALIBRATION_IMAGES] if variant.get("dtype") == "int8" else None
    predictor = Predictor(str(model_dir), batch_size=batch_size, calibration=calibration, **variant)
    list(predictor.stream(lambda: iter_inputs(files[:batch_size]), progress=False))
    return predictor


def time_dualsight_predict(predictor: Predictor, images: Path, scratch: Path) -> float:
    """Images per second of a `predict` run over `images`, results written as JSON lines."""
    start = time.perf_counter()
    with open(scratch / "out.jsonl", "w") as handle:
        writer = ResultWriter(handle, "jsonl")
        count = 0
        for result in predictor.stream(lambda: iter_inputs([images]), progress=False):
            writer.write(result)
            count += 1
    return count / (time.perf_counter() - start)


def time_input_pipeline(predictor: Predictor, images: Path) -> float:
    """Reading and preprocessing alone, in one thread, no model: what the forward pass overlaps with."""
    start = time.perf_counter()
    count = sum(1 for _ in PreprocessedInputs(lambda: iter_inputs([images]), predictor.prepare))
    return count / (time.perf_counter() - start)


def time_forward_only(predictor: Predictor, count: int) -> float:
    """The forward pass alone (with the per-batch normalisation and the heads' decisions), on pre-made inputs."""
    # every input the model takes (pixel_values, and artifact_values for an artifact stream), made once
    made = predictor.preprocess([Image.new("RGB", (512, 512))] * predictor.batch_size)
    batch = {name: (torch.randint_like(values, 256) if values.dtype == torch.uint8 else torch.rand_like(values))
             for name, values in made.items()}
    predictor.answers(*predictor.forward(batch))  # warm-up
    steps = max(1, count // predictor.batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        predictor.answers(*predictor.forward(batch))
    return steps * predictor.batch_size / (time.perf_counter() - start)


def peak_memory_mb(model_dir: Path, images: Path, batch_size: int, scratch: Path) -> float:
    """
    Peak resident memory of a fresh `dualsight predict` process over `images`: the child's own high-water mark
    (`VmHWM`, which starts afresh at `exec`), not `getrusage`'s `ru_maxrss`, which a child inherits from the forked
    parent, so that a large benchmark process would hide the child's figure behind its own.
    """
    code = ("import sys; from dualsight_hf.cli import main; rc = main(sys.argv[1:]); "
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))")
    result = subprocess.run([sys.executable, "-c", code, "predict", str(images), "--model", str(model_dir),
                             "--batch-size", str(batch_size), "--output", str(scratch / "memory.jsonl")],
                            capture_output=True, text=True, check=True)

    return int(result.stdout.strip().splitlines()[-1]) / 1024  # kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="512x512 JPEGs in the throughput folder")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--memory-images", type=int, nargs=2, default=(100, 10000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "dualsight-benchmark"))
    parser.add_argument("--out", default=None, help="results file (default: results/predict_throughput-MACHINE.json,"
                                                    " one per machine)")
    parser.add_argument("--readme", default=None, help="also write the result tables of every machine in results/ "
                                                      "into this README's benchmark-results block")
    parser.add_argument("--tables-only", action="store_true", help="measure nothing: only rewrite --readme's block "
                                                                  "from the results files already in results/")
    args = parser.parse_args()
    if not args.tables_only:
        measure(args)
    if args.readme:
        reports = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("predict_throughput-*.json"))]
        write_marked_block(args.readme, "benchmark-results", "\n".join(markdown_table(r) for r in reports))


def measure(args) -> None:
    """Run every measurement and write the results file of this machine."""
    work = Path(args.work_dir)
    images = make_jpegs(work / f"jpegs-{args.images}", args.images)
    models = {"resnet50": resnet50_folder(work / "resnet50"), "mobile": Path(MOBILE_MODEL_DIR)}
    report = {"machine": describe_machine(), "code": code_version(), "date": time.strftime("%Y-%m-%d"),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "readme", "tables_only")},
              "models": {}}
    for name, model_dir in models.items():
        dtype = str(Predictor(str(model_dir), num_workers=0).dtype).removeprefix("torch.")  # what --dtype auto picks
        runs = {"stock_pipeline": [], "input_pipeline_only": []}
        for round_index in range(args.rounds):
            runs["stock_pipeline"].append(time_stock_pipeline(model_dir, images, args.batch_size))
            for variant, options in VARIANTS.items():
                predictor = make_predictor(model_dir, images, args.batch_size, **options)
                runs.setdefault(variant, []).append(time_dualsight_predict(predictor, images, work))
                ceiling = variant.replace("dualsight_predict", "forward_only")
                runs.setdefault(ceiling, []).append(time_forward_only(predictor, args.images))
                if not options:
                    runs["input_pipeline_only"].append(time_input_pipeline(predictor, images))
                del predictor
            print(f"{name} round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in runs.items()),
                  flush=True)
        median = {k: statistics.median(v) for k, v in runs.items()}
        report["models"][name] = {
            "images_per_second": median, "all_rounds": runs, "dualsight_dtype": dtype,
            **{f"{variant}_speedup_over_stock_pipeline": median[variant] / median["stock_pipeline"]
               for variant in VARIANTS},
            **{f"{variant}_fraction_of_forward_only":
               median[variant] / median[variant.replace("dualsight_predict", "forward_only")] for variant in VARIANTS},
        }
    small, large = args.memory_images
    memory = {}
    for count in (small, large):
        folder = make_jpegs(work / f"jpegs-{count}", count)
        memory[count] = peak_memory_mb(models["mobile"], folder, args.batch_size, work)
        print(f"peak memory, mobile model, {count} images: {memory[count]:.0f} MB", flush=True)
    report["peak_memory_mb"] = {"model": "mobile", **{str(k): v for k, v in memory.items()},
                                "ratio_large_to_small": memory[large] / memory[small], "method": "VmHWM"}

    out = Path(args.out or RESULTS / f"predict_throughput-{machine_slug(report['machine'])}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({name: {k: round(v, 3) for k, v in m.items() if k.endswith(("stock_pipeline", "forward_only"))}
                      for name, m in report["models"].items()}, indent=2))
    print(f"peak memory {large} vs {small} images: x{report['peak_memory_mb']['ratio_large_to_small']:.2f}")
    print(f"written to {out}")


def code_version() -> str:
    """The repository's commit, with `+changes` when the working tree differs from it."""
    def git(*command):
        return subprocess.run(["git", *command], cwd=Path(__file__).parent, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


#: How the README names each measured variant: (mode, its end-to-end key, its forward-only key, its precision when
#: it is not the one `--dtype auto` picks).
TABLE_ROWS = (("`dualsight predict`", "dualsight_predict", "forward_only", None),
              ("`--compile`", "dualsight_predict_compiled", "forward_only_compiled", None),
              ("`--dtype int8` (opt-in)", "dualsight_predict_int8", "forward_only_int8", ""),
              ("`--backend onnxruntime`", "dualsight_predict_onnxruntime", "forward_only_onnxruntime", "float32"))


def markdown_table(report: dict) -> str:
    """One machine's benchmark result as Markdown, with the machine it ran on; one row per model and mode (modes a
    run did not measure are left out, figures it did not measure are "-")."""
    settings = report["settings"]
    lines = [f"Measured by `benchmarks/predict_throughput.py` on {machine_line(report['machine'])}"
             + (f", code of commit {report['code']} ({report['date']})" if "code" in report else "") + ": "
             f"{settings['images']} JPEGs of 512x512, batch {settings['batch_size']}, median of "
             f"{settings['rounds']} interleaved rounds.\n",
             "| model | mode | end-to-end | speed-up over the stock pipeline | forward only | share of ceiling |",
             "|---|---|---|---|---|---|"]

    def rate(speed, key):
        return f"{speed[key]:.1f} img/s" if key in speed else "-"

    for name, result in report["models"].items():
        speed = result["images_per_second"]
        lines.append(f"| {name} | stock pipeline (float32) | {rate(speed, 'stock_pipeline')} | x1.00 | - | - |")
        for mode, end_to_end, forward, precision in TABLE_ROWS:
            if end_to_end not in speed:
                continue
            precision = result["dualsight_dtype"] if precision is None else precision
            label = f"{mode} ({precision})" if precision else mode
            share = f"{speed[end_to_end] / speed[forward]:.0%}" if forward in speed else "-"
            lines.append(f"| {name} | {label} | {rate(speed, end_to_end)} | "
                         f"x{speed[end_to_end] / speed['stock_pipeline']:.2f} | {rate(speed, forward)} | {share} |")
        if "input_pipeline_only" in speed:
            lines.append(f"| {name} | reading + preprocessing alone (1 thread, no model) | "
                         f"{rate(speed, 'input_pipeline_only')} | - | - | - |")
    memory = report["peak_memory_mb"]
    sizes = [key for key in memory if key.isdigit()]
    if "method" not in memory:  # runs before the VmHWM fix read the benchmark process's own peak through the child
        lines.append("\nPeak memory: not measured correctly in this run (it read `ru_maxrss`, which the child "
                     "process inherits from the benchmark process), and not re-measured on this machine.\n")
        return "\n".join(lines)
    lines.append("\nPeak memory of `dualsight predict` (mobile model, its own process): " + ", ".join(
        f"{memory[key]:.0f} MB for {int(key):,d} images" for key in sizes) +
        f" (x{memory['ratio_large_to_small']:.2f}).\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
