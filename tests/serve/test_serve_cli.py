"""`dualsight serve` as a process (started as the load benchmark starts it): concurrent clients share forward
passes, a 200 survives SIGKILL, and the command line refuses what it should; `dualsight history export`."""

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the service needs the serve extra (fastapi, uvicorn, sqlalchemy)")
pytest.importorskip("uvicorn", reason="the service needs the serve extra (fastapi, uvicorn, sqlalchemy)")

import httpx  # noqa: E402
from conftest import REPO, load_benchmark  # noqa: E402
from conftest import png_bytes as png


def start_server(model, database, *options):
    return load_benchmark("serve_load").start_service(model, database, *options)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_concurrent_requests_share_batches_and_each_gets_one_row(tmp_path, tiny_model_dir):
    process, url = start_server(tiny_model_dir, tmp_path / "history.sqlite3", "--max-wait-ms", "50")
    try:
        def send(seed):
            return httpx.post(f"{url}/v1/predict", files={"file": (f"{seed}.png", png(seed), "image/png")},
                              timeout=60)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(32)))
        assert [answer.status_code for answer in answers] == [200] * 32
        ids = [answer.json()["results"][0]["id"] for answer in answers]
        rows = httpx.get(f"{url}/v1/predictions?limit=1000").json()["items"]
        assert sorted(row["id"] for row in rows) == sorted(ids)
        text = httpx.get(f"{url}/metrics").text
        assert metric(text, "dualsight_batch_size_sum") == 32
        assert metric(text, "dualsight_batch_size_count") < 32  # some forward passes scored several requests
    finally:
        stop_server(process)


def test_an_answered_request_survives_sigkill(tmp_path, tiny_model_dir):
    database = tmp_path / "history.sqlite3"
    process, url = start_server(tiny_model_dir, database)
    try:
        answer = httpx.post(f"{url}/v1/predict", files={"file": ("a.png", png(0), "image/png")}, timeout=60)
        assert answer.status_code == 200
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    prediction_id = answer.json()["results"][0]["id"]
    process, url = start_server(tiny_model_dir, database)
    try:
        row = httpx.get(f"{url}/v1/predictions/{prediction_id}").json()
        assert row["id"] == prediction_id and row["file_name"] == "a.png"
    finally:
        stop_server(process)


def test_history_export_command(tmp_path, tiny_model_dir):
    from fastapi.testclient import TestClient

    from dualsight_hf.serve import ServiceSettings, create_app

    database = tmp_path / "history.sqlite3"
    with TestClient(create_app(ServiceSettings(model=str(tiny_model_dir), database_url=str(database)))) as client:
        client.post("/v1/predict", files=[("file", (f"{i}.png", png(i), "image/png")) for i in range(3)])
    out = tmp_path / "history.jsonl"
    result = subprocess.run([sys.executable, "-m", "dualsight_hf.cli", "history", "export", "--database-url",
                             str(database), "--output", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "exported 3 predictions" in result.stderr
    assert [json.loads(line)["file_name"] for line in out.read_text().splitlines()] == ["0.png", "1.png", "2.png"]


@pytest.mark.parametrize("argv, message", [
    (["serve", "--host", "0.0.0.0"], "give --api-key-file"),
    (["history", "export", "--database-url", "absent.sqlite3"], "absent.sqlite3: no such history file"),
])
def test_command_line_refusals_are_one_line(tmp_path, argv, message):
    result = subprocess.run([sys.executable, "-m", "dualsight_hf.cli", *argv], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
