"""The HTTP service in process (FastAPI's TestClient): answers, refusals, keys, history endpoints and metrics."""

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service needs the serve extra (fastapi, uvicorn, sqlalchemy)")
pytest.importorskip("sqlalchemy", reason="the service needs the serve extra (fastapi, uvicorn, sqlalchemy)")

from conftest import REPO, require_default_model  # noqa: E402
from conftest import png_bytes as png
from fastapi.testclient import TestClient  # noqa: E402

from dualsight_hf.cli import main  # noqa: E402
from dualsight_hf.serve import ServiceSettings, create_app  # noqa: E402

KEY = "uploads-0123456789abcdef"
READER_KEY = "audit-0123456789abcdef01"


@pytest.fixture
def serve(tmp_path, tiny_model_dir):
    """Start the app with settings; returns the client (closed at the end of the test)."""
    clients = []

    def start(**overrides) -> TestClient:
        settings = {"model": str(tiny_model_dir), "database_url": str(tmp_path / "history.sqlite3"), **overrides}
        client = TestClient(create_app(ServiceSettings(**settings)))
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"uploads:{KEY}\naudit:{READER_KEY}\n")
    return path


def test_answers_are_those_of_dualsight_predict(tmp_path, capsys):
    """The default model on the README's example images: the same labels, scores and objects as the CLI."""
    require_default_model()
    examples = sorted(path for path in (REPO / "examples").rglob("*") if path.suffix in (".jpg", ".png"))
    assert main(["predict", *map(str, examples), "--format", "json"]) == 0
    expected = {Path(result["path"]).name: result for result in json.loads(capsys.readouterr().out)}
    with TestClient(create_app(ServiceSettings(database_url=str(tmp_path / "h.sqlite3")))) as client:
        answer = client.post("/v1/predict", files=[("file", (path.name, path.read_bytes(), "image/jpeg"))
                                                   for path in examples])
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert len(results) == len(examples) == len(expected)
    for result in results:
        reference = expected[result["file_name"]]
        assert result["label"] == reference["label"]
        assert result["score"] == pytest.approx(reference["score"], abs=1e-6)
        assert [o["label"] for o in result["objects"]] == [o["label"] for o in reference["objects"]]
        assert result["uncertain"] is (reference["label"] == "uncertain")


def test_good_images_are_scored_and_recorded_bad_ones_named(serve):
    client = serve()
    files = [("file", ("good-1.png", png(1), "image/png")), ("file", ("notes.txt", b"hello", "text/plain")),
             ("file", ("fake.jpg", b"<html>not an image</html>", "image/jpeg")),
             ("file", ("good-2.png", png(2), "image/png"))]
    answer = client.post("/v1/predict", files=files)
    assert answer.status_code == 200
    body = answer.json()
    results = {result["file_name"]: result for result in body["results"]}
    assert body["failed"] == 2
    assert results["notes.txt"]["error"]["status"] == 415
    assert results["fake.jpg"]["error"] == {"status": 400, "cause": "unreadable_image",
                                            "message": "fake.jpg: not an image: the file holds HTML"}
    recorded = client.get("/v1/predictions").json()["items"]
    assert {row["file_name"] for row in recorded} == {"good-1.png", "good-2.png"}
    for name in ("good-1.png", "good-2.png"):
        row = client.get(f"/v1/predictions/{results[name]['id']}").json()
        assert row["label"] == results[name]["label"] and row["score"] == results[name]["score"]
        assert row["sha256"] == results[name]["sha256"] and row["request_id"] == body["request_id"]
        assert row["model_id"] == body["model"]["id"] and len(row["model_revision"]) == 16
        assert row["objects"] == results[name]["objects"] and row["decision_threshold"] == 0.5


def test_a_request_of_only_bad_images_gets_their_status(serve):
    client = serve()
    answer = client.post("/v1/predict", files={"file": ("empty.png", b"", "image/png")})
    assert answer.status_code == 400 and answer.json()["results"][0]["error"]["cause"] == "unreadable_image"
    assert client.get("/v1/predictions").json()["items"] == []


@pytest.mark.parametrize("overrides, files, status, cause", [
    ({"max_images_per_request": 2}, [("file", (f"{i}.png", png(i), "image/png")) for i in range(3)], 413,
     "too_many_images"),
    ({"max_upload_bytes": 100}, [("file", ("big.png", png(0), "image/png"))], 413, "too_large"),
    ({"max_pixels": 100}, [("file", ("wide.png", png(0), "image/png"))], 413, "too_large"),
    ({}, [("note", (None, "a text field, no file"))], 422, "bad_parameter"),
])
def test_limits_are_refused_with_their_cause(serve, overrides, files, status, cause):
    client = serve(**overrides)
    answer = client.post("/v1/predict", files=files)
    assert answer.status_code == status
    body = answer.json()
    error = body["error"] if "error" in body else body["results"][0]["error"]
    assert error["cause"] == cause and "\n" not in error["message"]


def test_not_multipart_and_bad_parameters(serve):
    client = serve()
    answer = client.post("/v1/predict", content=png(0), headers={"content-type": "image/png"})
    assert answer.status_code == 415 and answer.json()["error"]["cause"] == "unsupported_media_type"
    answer = client.post("/v1/predict?head=faces", files={"file": ("a.png", png(0), "image/png")})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == "head: Input should be 'authenticity', 'objects' or 'both'"
    assert client.get("/v1/predictions?limit=0").status_code == 422
    assert client.get("/v1/predictions/absent").status_code == 404


def test_head_selects_what_the_answer_shows(serve):
    client = serve()
    only_objects = client.post("/v1/predict?head=objects", files={"file": ("a.png", png(0), "image/png")}).json()
    assert "objects" in only_objects["results"][0] and "label" not in only_objects["results"][0]
    only_authenticity = client.post("/v1/predict?head=authenticity",
                                    files={"file": ("a.png", png(0), "image/png")}).json()
    assert "label" in only_authenticity["results"][0] and "objects" not in only_authenticity["results"][0]
    rows = client.get("/v1/predictions").json()["items"]  # both heads are recorded whatever the answer shows
    assert all(row["label"] and isinstance(row["objects"], list) for row in rows) and len(rows) == 2


def test_writes_need_a_key_and_record_its_client(serve, key_file):
    client = serve(api_key_file=str(key_file))
    files = {"file": ("a.png", png(0), "image/png")}
    assert client.post("/v1/predict", files=files).status_code == 401
    wrong = client.post("/v1/predict", files=files, headers={"Authorization": "Bearer " + KEY[:-1] + "x"})
    assert wrong.status_code == 401 and wrong.json()["error"]["cause"] == "unauthorized"
    answer = client.post("/v1/predict", files=files, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    assert client.get("/v1/predictions").status_code == 401
    rows = client.get("/v1/predictions", headers={"Authorization": f"Bearer {READER_KEY}"}).json()["items"]
    assert [row["client_id"] for row in rows] == ["uploads"]


def test_open_reads(serve, key_file):
    client = serve(api_key_file=str(key_file), open_reads=True)
    assert client.get("/v1/predictions").status_code == 200
    assert client.post("/v1/predict", files={"file": ("a.png", png(0), "image/png")}).status_code == 401


def test_images_are_stored_only_when_asked(serve, tmp_path):
    client = serve(store_images=str(tmp_path / "store"))
    data = png(3)
    result = client.post("/v1/predict", files={"file": ("photo.PNG", data, "image/png")}).json()["results"][0]
    row = client.get(f"/v1/predictions/{result['id']}").json()
    assert Path(row["stored_image"]).read_bytes() == data and row["stored_image"].endswith(f"{result['sha256']}.png")


def test_history_filters_through_the_api(serve):
    client = serve()
    for seed in range(3):
        client.post("/v1/predict", files={"file": (f"{seed}.png", png(seed), "image/png")})
    everything = client.get("/v1/predictions").json()
    assert len(everything["items"]) == 3 and everything["next_offset"] is None
    first_page = client.get("/v1/predictions?limit=2").json()
    second_page = client.get(f"/v1/predictions?limit=2&offset={first_page['next_offset']}").json()
    assert [r["id"] for r in first_page["items"] + second_page["items"]] == [r["id"] for r in everything["items"]]
    wanted = everything["items"][1]
    assert [r["id"] for r in client.get(f"/v1/predictions?sha256={wanted['sha256']}").json()["items"]] == \
        [wanted["id"]]
    label = wanted["label"]
    assert all(r["label"] == label for r in client.get(f"/v1/predictions?label={label}").json()["items"])
    assert client.get("/v1/predictions?since=2999-01-01T00:00:00Z").json()["items"] == []


def test_health_readiness_and_metrics(serve):
    client = serve()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    client.post("/v1/predict", files=[("file", ("a.png", png(0), "image/png")),
                                      ("file", ("b.txt", b"x", "text/plain"))])
    text = client.get("/metrics").text
    assert 'dualsight_requests_total{endpoint="/v1/predict",status="200"} 1.0' in text
    assert 'dualsight_errors_total{cause="unsupported_media_type"} 1.0' in text
    assert "dualsight_batch_size_count 1.0" in text and "dualsight_batch_size_sum 1.0" in text
    assert "dualsight_request_latency_seconds_bucket" in text


def test_openapi_schema_lists_the_endpoints(serve):
    paths = serve().get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predictions", "/v1/predictions/{prediction_id}", "/v1/feedback", "/healthz",
            "/readyz", "/metrics"} <= set(paths)


def test_database_outage_is_503_then_recovers_without_restart(tmp_path, tiny_model_dir, postgres):
    """PostgreSQL stopped: requests get 503 and nothing is half-written; started again: the same app works."""
    from dualsight_hf.serve.history import feedback, predictions

    settings = ServiceSettings(model=str(tiny_model_dir), database_url=postgres.url)
    with TestClient(create_app(settings)) as client:
        with client.app.state.history.engine.begin() as connection:
            connection.execute(feedback.delete())
            connection.execute(predictions.delete())
        files = [("file", ("a.png", png(0), "image/png")), ("file", ("b.png", png(1), "image/png"))]
        assert client.post("/v1/predict", files=files).status_code == 200
        postgres.stop()
        try:
            refused = client.post("/v1/predict", files=files)
            assert refused.status_code == 503 and refused.json()["error"]["cause"] == "database_unavailable"
            assert client.get("/readyz").status_code == 503
            assert client.get("/v1/predictions").status_code == 503
        finally:
            postgres.start()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/predict", files=files).status_code == 200
        rows = client.get("/v1/predictions").json()["items"]
        assert len(rows) == 4 and len({row["request_id"] for row in rows}) == 2


def test_answers_and_history_carry_provenance(serve, c2pa_signer):
    from conftest import image_bytes

    client = serve()
    signed = c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg")
    answer = client.post("/v1/predict", files=[("file", ("signed.jpg", signed, "image/jpeg")),
                                               ("file", ("plain.png", png(1), "image/png"))]).json()
    by_name = {result["file_name"]: result for result in answer["results"]}
    assert by_name["signed.jpg"]["label"] == "ai_generated" and by_name["signed.jpg"]["decided_by"] == "provenance"
    assert by_name["signed.jpg"]["provenance"]["issuer"] == "Example Generator Inc"
    assert by_name["plain.png"]["provenance"]["claim"] == "none" and by_name["plain.png"]["decided_by"] == "pixels"
    row = client.get(f"/v1/predictions/{by_name['signed.jpg']['id']}").json()
    assert row["provenance"]["source"] == "c2pa" and row["decided_by"] == "provenance"


def test_feedback_needs_the_write_key_and_is_read_back(serve, key_file):
    client = serve(api_key_file=str(key_file))
    writer = {"Authorization": f"Bearer {KEY}"}
    prediction = client.post("/v1/predict", files={"file": ("a.png", png(0), "image/png")},
                             headers=writer).json()["results"][0]
    correction = {"prediction_id": prediction["id"], "label": "real", "reviewer": "ana"}
    assert client.post("/v1/feedback", json=correction).status_code == 401
    stored = client.post("/v1/feedback", json=correction, headers=writer)
    assert stored.status_code == 201 and stored.json()["client_id"] == "uploads"
    unknown = client.post("/v1/feedback", json={**correction, "prediction_id": "nope"}, headers=writer)
    assert unknown.status_code == 404 and unknown.json()["error"]["cause"] == "not_found"
    bad = client.post("/v1/feedback", json={**correction, "label": "fake"}, headers=writer)
    assert bad.status_code == 422 and "not one of" in bad.json()["error"]["message"]
    row = client.get(f"/v1/predictions/{prediction['id']}", headers={"Authorization": f"Bearer {READER_KEY}"}).json()
    assert [(f["label"], f["reviewer"]) for f in row["feedback"]] == [("real", "ana")]


def test_pixels_only_service_reads_no_provenance(serve, c2pa_signer):
    from conftest import image_bytes

    signed = c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg")
    result = serve(evidence="pixels").post("/v1/predict", files={"file": ("s.jpg", signed, "image/jpeg")}).json()
    assert result["results"][0]["provenance"] is None and result["results"][0]["decided_by"] == "pixels"
