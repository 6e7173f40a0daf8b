"""The throughput benchmark's bookkeeping: one results file per machine, and the README tables made from them."""

import json
import sys

import pytest
from conftest import REPO, load_benchmark, random_image, save_tiny_model

from dualsight_hf.machine import describe_machine, machine_slug


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("predict_throughput")


def report(cpu: str, amx: bool, speeds: dict, code: str | None = "abc1234") -> dict:
    machine = {"cpu": cpu, "cores": 2, "amx": amx, "avx512_bf16": True, "gpu": None, "torch": "2.13.0+cpu"}
    model = {"images_per_second": speeds, "dualsight_dtype": "bfloat16"}
    result = {"machine": machine, "settings": {"images": 8, "batch_size": 4, "rounds": 1},
              "models": {"resnet50": model}, "peak_memory_mb": {"100": 1000.0, "10000": 1100.0,
                                                                "ratio_large_to_small": 1.1, "method": "VmHWM"}}
    return {**result, "code": code, "date": "2026-12-02"} if code else result


def test_machine_slug_names_a_file():
    slug = machine_slug({"cpu": "Intel(R) Xeon(R) Platinum 8480+", "cores": 2, "amx": True, "avx512_bf16": True,
                         "gpu": None, "torch": "2.13.0"})
    assert slug == "2-cores-of-intel-xeon-platinum-8480-amx-avx512-bf16-no-gpu"
    assert machine_slug(describe_machine()).replace("-", "").isalnum()


def test_tables_only_writes_one_table_per_machine_file(benchmark, tmp_path, monkeypatch):
    speeds = {"stock_pipeline": 10.0, "dualsight_predict": 30.0, "forward_only": 40.0,
              "dualsight_predict_compiled": 45.0, "forward_only_compiled": 50.0, "dualsight_predict_int8": 60.0,
              "forward_only_int8": 80.0, "dualsight_predict_onnxruntime": 50.0, "forward_only_onnxruntime": 62.5,
              "input_pipeline_only": 200.0}
    # a results file from before the int8 mode and the compiled and reading-alone figures existed
    older = {key: speeds[key] for key in ("stock_pipeline", "dualsight_predict", "forward_only",
                                          "dualsight_predict_compiled")}
    results = tmp_path / "results"
    results.mkdir()
    (results / "predict_throughput-a.json").write_text(json.dumps(report("Chip A", True, speeds)))
    before_the_memory_fix = report("Chip B", False, older, code=None)
    del before_the_memory_fix["peak_memory_mb"]["method"]
    (results / "predict_throughput-b.json").write_text(json.dumps(before_the_memory_fix))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- benchmark-results:start -->\nold\n<!-- benchmark-results:end -->\nafter\n")
    monkeypatch.setattr(benchmark, "RESULTS", results)
    monkeypatch.setattr(sys, "argv", ["predict_throughput.py", "--tables-only", "--readme", str(readme)])
    benchmark.main()
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
    block = text.split("<!-- benchmark-results:start -->")[1]
    assert block.index("2 cores of Chip A (AMX, AVX512-BF16)") < block.index("2 cores of Chip B (AVX512-BF16)")
    assert "code of commit abc1234 (2026-12-02)" in block
    tables = block.split("Measured by")[1:]
    rows = [[line.split(" | ")[1:] for line in table.splitlines() if line.startswith("| resnet50")] for table in tables]
    assert rows[0] == [["stock pipeline (float32)", "10.0 img/s", "x1.00", "-", "- |"],
                       ["`dualsight predict` (bfloat16)", "30.0 img/s", "x3.00", "40.0 img/s", "75% |"],
                       ["`--compile` (bfloat16)", "45.0 img/s", "x4.50", "50.0 img/s", "90% |"],
                       ["`--dtype int8` (opt-in)", "60.0 img/s", "x6.00", "80.0 img/s", "75% |"],
                       ["`--backend onnxruntime` (float32)", "50.0 img/s", "x5.00", "62.5 img/s", "80% |"],
                       ["reading + preprocessing alone (1 thread, no model)", "200.0 img/s", "-", "-", "- |"]]
    assert rows[1][2] == ["`--compile` (bfloat16)", "45.0 img/s", "x4.50", "-", "- |"] and len(rows[1]) == 3
    assert "1000 MB for 100 images, 1100 MB for 10,000 images (x1.10)" in tables[0]
    assert "not measured correctly in this run" in tables[1] and "1100 MB" not in tables[1]


def test_peak_memory_is_the_child_process_own(benchmark, tmp_path):
    """A large benchmark process must not show through as the child's peak (ru_maxrss survives fork and exec)."""
    ballast = bytearray(600 * 2**20)  # the parent holds 600 MB more than a child needs
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched, so resident
    model = save_tiny_model(tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    random_image().save(images / "a.png")
    peak = benchmark.peak_memory_mb(model, images, 2, tmp_path)
    assert 50 < peak < 600, peak
    del ballast


def test_results_name_the_code_they_measured(benchmark):
    import re
    import subprocess

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    if not head.strip():
        pytest.skip("the repository is not a git checkout (e.g. an unpacked archive): no commit to name")
    version = benchmark.code_version()
    assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?", version) and version.startswith(head.strip())


@pytest.mark.parametrize("variant", ["dualsight_predict", "dualsight_predict_onnxruntime"])
def test_each_mode_is_timed_end_to_end_forward_only_and_reading_alone(benchmark, tmp_path, monkeypatch, variant):
    pytest.importorskip("onnxruntime", reason="the onnxruntime mode needs the export extra")
    monkeypatch.setenv("DUALSIGHT_HOME", str(tmp_path / "home"))  # where the onnxruntime export goes
    model = save_tiny_model(tmp_path / "model")
    images = benchmark.make_jpegs(tmp_path / "jpegs", 5, size=64)
    predictor = benchmark.make_predictor(model, images, 2, **benchmark.VARIANTS[variant])
    assert benchmark.time_dualsight_predict(predictor, images, tmp_path) > 0
    assert benchmark.time_forward_only(predictor, 4) > 0
    assert benchmark.time_input_pipeline(predictor, images) > 0
