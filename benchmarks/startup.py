#!/usr/bin/env python
"""How long a newcomer waits: `dualsight predict` on one image from a cold command to its result, and `dualsight
evaluate --quick` on the mobile model's test split, each in a fresh process, on this machine.

- start-up: `dualsight predict examples/real/chelsea.png --model M`, for the default and the mobile model, each run
  `--repeats` times; the median wall time from starting the command to its exit (the result is printed just before), and, for the same
  Python, the time of `import dualsight_hf.cli` alone and that of `import transformers.modeling_utils` alone (the
  floor: what importing any transformers model costs here). Whether torchao is installed is recorded: transformers imports
  it whenever it is (the `int8` and `test` extras), which adds to every start.
- evaluate: `dualsight evaluate --quick` on the test split the mobile model's training run recorded (needs
  ../shared), with its wall time, images and passes; the full evaluation's duration is estimated from the same rate
  (its passes: clean, every default degradation level and the two shortcut arrangements).

Results go to `results/startup-<machine>.json` and, with `--readme`, into the README's `startup` block.

    python benchmarks/startup.py --readme README.md      # about 3 minutes on 2 CPU cores
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dualsight_hf.data.degradations import DEFAULT_LEVELS
from dualsight_hf.evaluation.evaluate import QUICK_PERTURBATIONS
from dualsight_hf.machine import describe_machine, machine_line, machine_slug

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_blocks, beside this script
from readme_blocks import write_marked_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
DUALSIGHT = [sys.executable, "-m", "dualsight_hf.cli"]
#: the models `dualsight predict` is timed with: the default model (built by `dualsight build-model`) and the mobile one
MODELS = {"default": "the default model (CLIP ViT-B/16)", "mobile": "the mobile model (MobileNetV2)"}


def wall_time(command: list[str]) -> float:
    """Seconds from starting `command` (in the repository's folder) to its exit; it must succeed."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:  # e.g. the default model is not built: say what the command said
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr.strip()[-500:]}")
    return seconds


def measure_startup(repeats: int) -> dict:
    predict = {model: [wall_time(DUALSIGHT + ["predict", "examples/real/chelsea.png", "--model", model])
                       for _ in range(repeats)] for model in MODELS}
    imports = [wall_time([sys.executable, "-c", "import dualsight_hf.cli"]) for _ in range(repeats)]
    # the floor no DualSight change can lower: what any transformers model costs to import on this machine
    floor = [wall_time([sys.executable, "-c", "import transformers.modeling_utils"]) for _ in range(repeats)]
    return {"predict_one_image_seconds": {model: statistics.median(runs) for model, runs in predict.items()},
            "import_seconds": statistics.median(imports),
            "transformers_modeling_import_seconds": statistics.median(floor),
            "runs": {"predict": predict, "import": imports, "transformers_modeling_import": floor},
            "torchao_installed": importlib.util.find_spec("torchao") is not None}


def measure_evaluate() -> dict:
    shared = REPO.parent / "shared" / "data"
    if not shared.exists():
        return {"skipped": f"{shared} is absent"}
    with tempfile.TemporaryDirectory() as out:
        seconds = wall_time(DUALSIGHT + ["evaluate", "--model", "mobile", "--quick", "--out", out, "--data"] + [
            str(shared / name / "manifest.csv") for name in ("real-vs-ai", "photoreal-multi-generator")])
        images = json.loads((Path(out) / "results.json").read_text())["settings"]["count"]
    quick_passes = 1 + len(QUICK_PERTURBATIONS)
    full_passes = 1 + sum(len(levels) for levels in DEFAULT_LEVELS.values()) + 2
    return {"quick_seconds": seconds, "images": images, "quick_passes": quick_passes, "full_passes": full_passes,
            "full_estimate_seconds": seconds / quick_passes * full_passes}


def markdown(report: dict) -> str:
    startup, evaluation = report["startup"], report["evaluate"]
    lines = [f"Measured by `benchmarks/startup.py` on {machine_line(report['machine'])} ({report['date']}, commit "
             f"`{report['commit']}`), each command in a fresh process:\n",
             "| what | wall time |", "|---|---|",
             *(f"| `dualsight predict --model {model}` on one image, {MODELS[model]}, command to result (median of "
               f"{len(runs)}) | {startup['predict_one_image_seconds'][model]:.1f} s |"
               for model, runs in startup["runs"]["predict"].items()),
             f"| of which `import dualsight_hf.cli` alone | {startup['import_seconds']:.1f} s |",
             f"| `import transformers.modeling_utils` alone, which every transformers model needs (torch, "
             f"torch._dynamo, torch.distributed.tensor) | {startup['transformers_modeling_import_seconds']:.1f} s |"]
    if "skipped" not in evaluation:
        lines += [f"| `dualsight evaluate --quick`, {evaluation['images']} test images x {evaluation['quick_passes']} "
                  f"passes | {evaluation['quick_seconds'] / 60:.1f} min |",
                  f"| the full `dualsight evaluate` ({evaluation['full_passes']} passes), estimated from the same "

                  f"rate | {evaluation['full_estimate_seconds'] / 60:.1f} min |"]
    lines.append("\ntorchao " + ("is" if startup["torchao_installed"] else "is not") + " installed here; transformers "
                 "imports it whenever it is (the `int8` and `test` extras), which adds to every start.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--readme", default=None, help="write the table into this README's startup block")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"),
              "commit": commit.stdout.strip() or None, "startup": measure_startup(args.repeats),
              "evaluate": measure_evaluate()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"startup-{machine_slug(report['machine'])}.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if args.readme:
        write_marked_block(args.readme, "startup", markdown(report))


if __name__ == "__main__":
    main()
