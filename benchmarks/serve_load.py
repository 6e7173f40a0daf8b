#!/usr/bin/env python
"""Load on `dualsight serve`, loopback only: N concurrent clients each sending single-image requests, against
sequential single-image calls of the same model in one process (no HTTP, no batching).

- The server is started as a user would start it (`dualsight serve --model mobile` unless `--model`,
  a fresh SQLite history) and used through HTTP with `httpx`, one client per thread.
- Images: those of `examples/` (photos and generated images of mixed sizes, JPEG and PNG), cycled.
- For each concurrency level: `--requests` requests (or fewer if `--max-seconds` runs out), throughput, p50 / p99
  latency per request, the mean batch size (from the server's `/metrics`: images scored over forward passes during
  the level), errors, and at the end that the history holds exactly one row per answered request.
- The baseline: `Predictor.prepare` + `Predictor.score` on one image at a time, the same images and model.

Results go to `results/serve_load-<machine>.json` and, with `--readme`, into the README's `serve-load` block.

    python benchmarks/serve_load.py --readme README.md      # about 3 minutes on 2 CPU cores
"""

import argparse
import itertools
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from dualsight_hf.inference.predictor import Predictor
from dualsight_hf.machine import describe_machine, machine_line, machine_slug
from dualsight_hf.serve.history import History

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_blocks, beside this script
from readme_blocks import write_marked_block  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def example_images() -> list[tuple[str, bytes]]:
    paths = sorted(path for path in (REPO / "examples").rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    return [(path.name, path.read_bytes()) for path in paths]


def latency_summary(seconds: list[float], elapsed: float) -> dict:
    return {"requests": len(seconds), "images_per_second": len(seconds) / elapsed,
            "p50_ms": float(np.percentile(seconds, 50) * 1000), "p99_ms": float(np.percentile(seconds, 99) * 1000)}


def sequential_baseline(model: str | None, images: list, count: int) -> dict:
    """One image per call of the model in this process, as a script without the service would score them."""
    predictor = Predictor(model, batch_size=1, num_workers=0)
    predictor.score([predictor.prepare(images[0][1])])  # warm-up
    seconds = []
    started = time.perf_counter()
    for name, data in itertools.islice(itertools.cycle(images), count):
        begun = time.perf_counter()
        predictor.score([predictor.prepare(data, name)])
        seconds.append(time.perf_counter() - begun)
    return latency_summary(seconds, time.perf_counter() - started)


def batch_totals(url: str) -> tuple[float, float]:
    """Images scored and forward passes so far, from the server's metrics."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()

    def value(name):
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + " "))

    return value("dualsight_batch_size_sum"), value("dualsight_batch_size_count")


def load_level(url: str, images: list, clients: int, requests: int, max_seconds: float) -> dict:
    """`requests` single-image requests from `clients` threads at once."""
    work = itertools.islice(itertools.cycle(images), requests)
    deadline = time.perf_counter() + max_seconds
    images_before, batches_before = batch_totals(url)

    def client_loop(_):
        seconds, errors = [], 0
        with httpx.Client(timeout=120) as client:
            for name, data in work:  # the threads share one iterator: each request is sent once
                if time.perf_counter() > deadline:
                    break
                begun = time.perf_counter()
                answer = client.post(f"{url}/v1/predict", files={"file": (name, data, "application/octet-stream")})
                if answer.status_code == 200 and answer.json()["failed"] == 0:
                    seconds.append(time.perf_counter() - begun)
                else:
                    errors += 1
        return seconds, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(client_loop, range(clients)))
    elapsed = time.perf_counter() - started
    seconds = [value for answered, _ in outcomes for value in answered]
    images_after, batches_after = batch_totals(url)
    summary = latency_summary(seconds, elapsed)
    summary.update(clients=clients, errors=sum(errors for _, errors in outcomes),
                   mean_batch_size=(images_after - images_before) / max(batches_after - batches_before, 1))
    return summary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(model: str | None, database: Path, *options: str, ready_within: float = 120):
    """`dualsight serve` in a new process on a free loopback port, once `/readyz` answers: `(process, url)`."""
    port = free_port()
    command = [sys.executable, "-m", "dualsight_hf.cli", "serve", "--database-url", str(database), "--port",
               str(port), *options] + (["--model", str(model)] if model else [])
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the service did not become ready in {ready_within:.0f} s")


def measure(args) -> dict:
    images = example_images()
    baseline = sequential_baseline(args.model, images, args.baseline_requests)
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "history.sqlite3"
        process, url = start_service(args.model, database, "--max-wait-ms", str(args.max_wait_ms))
        try:
            load_level(url, images, 2, 4, args.max_seconds)  # warm-up, not reported
            levels = [load_level(url, images, clients, args.requests, args.max_seconds) for clients in args.clients]
            stored = History(str(database), upgrade=False).search(limit=None)
        finally:
            process.terminate()
            process.wait(timeout=30)
    answered = 4 + sum(level["requests"] for level in levels)
    return {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "model": args.model,
            "images": len(images), "max_wait_ms": args.max_wait_ms, "sequential": baseline, "levels": levels,
            "answered_requests": answered, "history_rows": len(stored),
            "one_row_per_request": len(stored) == answered and len({row["id"] for row in stored}) == answered}


def markdown(report: dict) -> str:
    baseline = report["sequential"]
    lines = [f"Measured by `benchmarks/serve_load.py` on {machine_line(report['machine'])} ({report['date']}, "
             f"commit `{report['commit']}`), loopback, the {report['model']} model, single-image requests cycling "
             f"through the {report['images']} images of `examples/`, micro-batching window "
             f"{report['max_wait_ms']:g} ms:\n",
             "| clients | requests | images/s | p50 latency | p99 latency | mean batch size | errors |",
             "|---|---|---|---|---|---|---|",
             f"| sequential calls in one process, no service | {baseline['requests']} | "
             f"{baseline['images_per_second']:.1f} | {baseline['p50_ms']:.0f} ms | {baseline['p99_ms']:.0f} ms | 1 | "
             "0 |"]
    for level in report["levels"]:
        lines.append(f"| {level['clients']} concurrent | {level['requests']} | {level['images_per_second']:.1f} | "
                     f"{level['p50_ms']:.0f} ms | {level['p99_ms']:.0f} ms | {level['mean_batch_size']:.1f} | "
                     f"{level['errors']} |")
    lines.append(f"\nThe history held {report['history_rows']} rows for {report['answered_requests']} answered "
                 f"requests (warm-up included): " + ("exactly one per request." if report["one_row_per_request"]
                                                     else "NOT one per request."))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobile", help="model folder, Hub id, 'default' or 'mobile' (default: "
                                                           "mobile, the model the recorded table served)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    parser.add_argument("--baseline-requests", type=int, default=64, help="sequential calls for the baseline")
    parser.add_argument("--max-seconds", type=float, default=120, help="time bound of each level")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the service's micro-batching window")
    parser.add_argument("--readme", default=None, help="write the table into this README's serve-load block")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report = {"commit": commit.stdout.strip() or None, **measure(args)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"serve_load-{machine_slug(report['machine'])}.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if args.readme:
        write_marked_block(args.readme, "serve-load", markdown(report))
    if not report["one_row_per_request"] or any(level["errors"] for level in report["levels"]):
        raise SystemExit("serve_load: errors, or the history does not hold one row per request")


if __name__ == "__main__":
    main()
