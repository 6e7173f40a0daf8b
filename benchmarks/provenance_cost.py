#!/usr/bin/env python
"""What reading provenance costs per image, on this machine: `provenance.read_provenance` on files from disk (the
read included), the median over `--repeats` passes.

- files without provenance metadata: the images of `examples/` (JPEG and PNG photos and generated images);
- a PNG with AUTOMATIC1111 `parameters` and a JPEG with an IPTC digital source type in XMP (unsigned metadata);
- a JPEG with a C2PA manifest signed here (ES256, a throw-away certificate chain), validated by `c2pa-python`; what
  `dualsight predict` answers for it with the mobile model goes into the README as an example.

The aim for a file without metadata is under 2 ms. Results go to `results/provenance_cost-<machine>.json` and, with
`--readme`, into the README's `provenance-cost` block.

    python benchmarks/provenance_cost.py --readme README.md      # a few seconds
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from dualsight_hf.inference.predictor import Predictor
from dualsight_hf.inference.provenance import c2pa_available, read_provenance
from dualsight_hf.machine import describe_machine, machine_line, machine_slug

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_blocks, beside this script
from readme_blocks import write_marked_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")


def per_image_ms(paths: list[Path], repeats: int) -> float:
    """Median over passes of the mean time per file, in milliseconds."""
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for path in paths:
            read_provenance(path)
        passes.append((time.perf_counter() - started) / len(paths) * 1000)
    return statistics.median(passes)


def declared_files(folder: Path) -> dict[str, list[Path]]:
    from PIL import PngImagePlugin

    from dualsight_hf.testing_utils import AI_SOURCE_TYPE, C2paSigner, image_bytes

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    files = {"png_with_a1111_parameters": ("a1111.png", image_bytes("PNG", pnginfo=info)),
             "jpeg_with_iptc_xmp": ("iptc.jpg", image_bytes("JPEG", xmp=(
                 '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                 '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
                 f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE_TYPE}"/></rdf:RDF></x:xmpmeta>').encode()))}
    if c2pa_available():
        files["jpeg_with_signed_c2pa_manifest"] = ("signed.jpg", C2paSigner().sign(image_bytes("JPEG"), "image/jpeg"))
    written = {}
    for kind, (name, data) in files.items():
        (folder / name).write_bytes(data)
        written[kind] = [folder / name]
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--readme", default=None, help="write the table into this README's provenance-cost block")
    args = parser.parse_args()
    examples = sorted(p for p in (REPO / "examples").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert all(read_provenance(path).claim == "none" for path in examples), "an example image declares something"
    with tempfile.TemporaryDirectory() as folder:
        groups = {"examples_without_metadata": examples, **declared_files(Path(folder))}
        costs = {kind: {"files": len(paths), "ms_per_image": per_image_ms(paths, args.repeats),
                        "claim": read_provenance(paths[0]).claim} for kind, paths in groups.items()}
        signed = groups.get("jpeg_with_signed_c2pa_manifest")
        example = asdict(Predictor("mobile", num_workers=0).predict_paths(signed)[0]) if signed else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(),
              "repeats": args.repeats, "c2pa_python": c2pa_available(), "costs": costs, "example": example}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"provenance_cost-{machine_slug(report['machine'])}.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if args.readme:
        write_marked_block(args.readme, "provenance-cost", markdown(report))
        if example:
            example["path"] = "signed.jpg"
            fields = ",\n".join(f" {json.dumps(name)}: {json.dumps(value)}" for name, value in example.items())
            write_marked_block(args.readme, "provenance-example", f"```json\n{{\n{fields}\n}}\n```\n")


def markdown(report: dict) -> str:
    lines = [f"Measured by `benchmarks/provenance_cost.py` on {machine_line(report['machine'])} ({report['date']}, "
             f"commit `{report['commit']}`), files read from disk, median of {report['repeats']} passes:\n",
             "| files | count | claim read | time per image |", "|---|---|---|---|"]
    for kind, cost in report["costs"].items():
        lines.append(f"| {kind.replace('_', ' ')} | {cost['files']} | {cost['claim']} | "
                     f"{cost['ms_per_image']:.2f} ms |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
