"""
Golden predictions: what `dualsight predict --format json` answers on a fixed sample of the shared data, written once
and compared after a change that must not move the answers (a refactor, a new loader, a faster kernel).

    python scripts/golden_predictions.py write tests/scripts/golden_predictions.json --models default mobile
    python scripts/golden_predictions.py check tests/scripts/golden_predictions.json

`write` records every model's results with the machine they ran on; `check` scores the same images again and
prints every label that changed and every probability that moved by more than `--atol` (exit 1), or one line that
says they agree. A model folder that is made on the fly (a seed configuration with seeded random weights, see
`seed_model`) is named by its folder and must exist at check time.
"""

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

from dualsight_hf import cli
from dualsight_hf.machine import describe_machine, machine_line

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: every STRIDE-th row of each shared manifest, in file order, plus the README's example images
STRIDE = 40
MANIFESTS = ("real-vs-ai", "photoreal-multi-generator")
#: one image source each way: a kernel of another CPU (AVX2 against AVX-512) moves float32 probabilities by ~1e-7
SAME_MACHINE_ATOL = 1e-6
OTHER_MACHINE_ATOL = 1e-4


def golden_images() -> list[str]:
    """The sample: paths relative to the repository root (`../shared/...`, `examples/...`), in a fixed order."""
    paths = []
    for name in MANIFESTS:
        with open(SHARED_DATA / name / "manifest.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        paths += [f"../shared/data/{name}/{row['path']}" for row in rows[::STRIDE]]
    paths += sorted(str(path.relative_to(REPO)) for path in (REPO / "examples").rglob("*") if path.is_file()
                    and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    return paths


def predict_json(model: str, paths: list[str]) -> list[dict]:
    """`dualsight predict PATHS --model MODEL --format json`, run in this process from the repository root."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "results.json"
        code = cli.main(["predict", *paths, "--model", model, "--format", "json", "--output", str(output)])
        if code:
            raise SystemExit(f"dualsight predict --model {model} failed with exit status {code}")
        return json.loads(output.read_text())


def differences(expected: list[dict], actual: list[dict], atol: float) -> list[str]:
    """One line per result whose label changed or whose probability (`score`, or a class's in `authenticity` or
    `objects`) moved by more than `atol`; empty when they agree."""
    if [r["path"] for r in expected] != [r["path"] for r in actual]:
        return ["the results name other images, or in another order"]
    lines = []
    for before, after in zip(expected, actual):
        if before["label"] != after["label"]:
            lines.append(f"{before['path']}: label {before['label']} -> {after['label']}")
        pairs = [("score", before["score"], after["score"])]
        for field in ("authenticity", "objects"):
            old = {entry["label"]: entry["score"] for entry in before[field]}
            new = {entry["label"]: entry["score"] for entry in after[field]}
            if old.keys() != new.keys():
                lines.append(f"{before['path']}: {field} names {sorted(old)} -> {sorted(new)}")
                continue
            pairs += [(f"{field}[{name}]", old[name], new[name]) for name in old]
        lines += [f"{before['path']}: {what} {old:.8f} -> {new:.8f}" for what, old, new in pairs
                  if (old is None) != (new is None) or (old is not None and abs(old - new) > atol)]
    return lines


def seed_model(config_dir: str, out: str, seed: int = 0) -> str:
    """A model of a seed configuration (`configs/NAME`) with weights drawn from `seed`, saved to `out` with the
    configuration's image processor; kept once made, so that a later `check` scores the same weights."""
    import shutil

    import torch

    from dualsight_hf import DualSightConfig, DualSightForImageClassification

    if not (Path(out) / "config.json").exists():
        torch.manual_seed(seed)
        DualSightForImageClassification(DualSightConfig.from_pretrained(config_dir)).save_pretrained(out)
        shutil.copy(Path(config_dir) / "preprocessor_config.json", out)
    return out


def atol_for(record: dict) -> float:
    """`SAME_MACHINE_ATOL` on the machine that wrote `record`, else `OTHER_MACHINE_ATOL`."""
    return SAME_MACHINE_ATOL if record["machine"] == machine_line(describe_machine()) else OTHER_MACHINE_ATOL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("record", help="the golden record (JSON)")
    parser.add_argument("--models", nargs="+", default=["default", "mobile"],
                        help="with write: models to record ('default', 'mobile' or folders)")
    parser.add_argument("--seed-config", default=None, help="with write: also record a model of this seed "
                        "configuration with seeded random weights, saved to --seed-model-dir")
    parser.add_argument("--seed-model-dir", default="/tmp/golden-seed-model")
    parser.add_argument("--atol", type=float, default=None, help="with check: allowed probability change (default "
                        f"{SAME_MACHINE_ATOL} on the machine that wrote the record, else {OTHER_MACHINE_ATOL})")
    args = parser.parse_args(argv)
    if args.action == "write":
        models = args.models + ([seed_model(args.seed_config, args.seed_model_dir)] if args.seed_config else [])
        paths = golden_images()
        record = {"machine": machine_line(describe_machine()), "images": paths,
                  "results": {model: predict_json(model, paths) for model in models}}
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.record}: {len(paths)} images x {len(models)} models")
        return 0
    record = json.loads(Path(args.record).read_text())
    atol = args.atol if args.atol is not None else atol_for(record)
    failed = False
    for model, expected in record["results"].items():
        lines = differences(expected, predict_json(model, record["images"]), atol)
        print(f"{model}: " + ("; ".join(lines) if lines else f"same labels, probabilities within {atol:g} "
                              f"({len(expected)} images)"))
        failed |= bool(lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
