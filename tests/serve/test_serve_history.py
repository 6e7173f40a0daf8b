"""The prediction history on SQLite and on a real PostgreSQL server: schema, writes, queries, export."""

import csv
import io
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("sqlalchemy", reason="the history needs the serve extra (sqlalchemy, alembic)")
pytest.importorskip("alembic", reason="the history needs the serve extra (sqlalchemy, alembic)")

import sqlalchemy as sa  # noqa: E402

from dualsight_hf.serve.history import History, HistoryUnavailable, database_url, feedback, predictions  # noqa: E402

START = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def row(minute: int, label: str = "real", model: str = "m", sha256: str = "a" * 64, **overrides) -> dict:
    values = {"id": str(uuid.uuid4()), "created_at": START + timedelta(minutes=minute), "request_id": "r",
              "image_index": 0,
              "client_id": "uploads", "sha256": sha256, "file_name": "x.jpg", "size_bytes": 10, "model_id": model,
              "model_revision": "abc", "label": label, "score": 0.75, "uncertain": label == "uncertain",
              "decision_threshold": 0.5, "authenticity": [{"label": label, "score": 0.75}],
              "objects": [{"label": "person", "score": 0.9}], "latency_ms": 12.5, "stored_image": None,
              "provenance": {"claim": "none", "source": None}, "decided_by": "pixels"}
    values.update(overrides)
    return values


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path):
    if request.param == "sqlite":
        opened = History(str(tmp_path / "history.sqlite3"))
    else:
        server = request.getfixturevalue("postgres")
        opened = History(server.url)
        with opened.engine.begin() as connection:  # a clean table for each test on the shared server
            connection.execute(feedback.delete())
            connection.execute(predictions.delete())
    yield opened
    opened.dispose()


def test_urls_from_what_users_type():
    assert database_url("runs/history.sqlite3") == "sqlite:///runs/history.sqlite3"
    assert database_url("postgresql://u:p@db:5432/h") == "postgresql+psycopg://u:p@db:5432/h"
    assert database_url("postgresql+psycopg://u@db/h") == "postgresql+psycopg://u@db/h"


def test_schema_is_migrated_and_versioned(history):
    assert history.schema_version() == "0003"
    columns = {column["name"] for column in sa.inspect(history.engine).get_columns("predictions")}
    assert columns == {column.name for column in predictions.columns}
    history.upgrade()  # idempotent: a restarted service migrates nothing twice
    assert history.schema_version() == "0003"


def test_sqlite_history_is_in_wal_mode(tmp_path):
    history = History(str(tmp_path / "history.sqlite3"))
    with history.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_rows_round_trip_with_their_json_and_time_zone(history):
    written = row(0, objects=[{"label": "dog", "score": 0.5}])
    history.record([written])
    read = history.get(written["id"])
    assert read == {**written, "feedback": []}
    assert history.get(str(uuid.uuid4())) is None


def test_search_filters_and_pages_newest_first(history):
    rows = [row(0, "real"), row(1, "ai_generated", sha256="b" * 64), row(2, "ai_generated", model="other"),
            row(3, "uncertain")]
    history.record(rows)
    assert [r["id"] for r in history.search()] == [r["id"] for r in reversed(rows)]
    assert [r["id"] for r in history.search(label="ai_generated")] == [rows[2]["id"], rows[1]["id"]]
    assert [r["id"] for r in history.search(model="other")] == [rows[2]["id"]]
    assert [r["id"] for r in history.search(sha256="B" * 64)] == [rows[1]["id"]]
    window = history.search(since=START + timedelta(minutes=1), until=START + timedelta(minutes=3))
    assert [r["id"] for r in window] == [rows[2]["id"], rows[1]["id"]]
    naive_window = history.search(since=datetime(2026, 12, 1, 12, 3))  # naive times are UTC
    assert [r["id"] for r in naive_window] == [rows[3]["id"]]
    pages = history.search(limit=2) + history.search(limit=2, offset=2)
    assert [r["id"] for r in pages] == [r["id"] for r in reversed(rows)]
    same_time = [row(9, image_index=index, id=f"{9 - index}") for index in range(3)]  # one request's images
    history.record(same_time)
    assert [r["image_index"] for r in history.search(since=START + timedelta(minutes=9))] == [0, 1, 2]


def test_a_failed_write_leaves_nothing(history):
    first = row(0)
    history.record([first])
    with pytest.raises(HistoryUnavailable, match="cannot write the history"):
        history.record([row(1), row(2, id=first["id"])])  # the second row clashes: neither is kept
    assert [r["id"] for r in history.search()] == [first["id"]]


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_export_holds_every_row_oldest_first(history, output_format):
    rows = [row(2, "ai_generated"), row(0, "real")]
    history.record(rows)
    out = io.StringIO()
    assert history.export(out, output_format) == 2
    text = out.getvalue()
    if output_format == "jsonl":
        exported = [json.loads(line) for line in text.splitlines()]
        assert exported[0]["objects"] == rows[1]["objects"]
    else:
        exported = list(csv.DictReader(io.StringIO(text)))
        assert json.loads(exported[0]["authenticity"]) == rows[1]["authenticity"]
    assert [r["id"] for r in exported] == [rows[1]["id"], rows[0]["id"]]
    assert exported[0]["created_at"] == START.isoformat()


def test_unreachable_database_is_one_line():
    with pytest.raises(HistoryUnavailable) as caught:
        History("postgresql://nobody@127.0.0.1:1/none")
    assert "cannot prepare the history" in str(caught.value) and "\n" not in str(caught.value)


def test_upgrading_keeps_the_rows_written_before(tmp_path):
    """A history written by the first schema is migrated in place when a newer service opens it."""
    path = str(tmp_path / "old.sqlite3")
    old = History(path, upgrade=False)
    old.upgrade("0001")
    first = {name: value for name, value in row(0).items() if name not in ("provenance", "decided_by")}
    with old.engine.begin() as connection:
        connection.execute(sa.table("predictions", *(sa.column(name) for name in first)).insert(), [
            {**first, "authenticity": json.dumps(first["authenticity"]), "objects": json.dumps(first["objects"])}])
    old.dispose()
    new = History(path)
    assert new.schema_version() == "0003"
    kept = new.get(first["id"])
    assert kept["label"] == "real" and kept["provenance"] is None and kept["objects"] == first["objects"]


def test_feedback_is_stored_beside_its_prediction(history, tmp_path):
    scored, other = row(0), row(1)
    history.record([scored, other])
    image = tmp_path / "stored.png"
    image.write_bytes(b"png bytes")
    with history.engine.begin() as connection:
        connection.execute(predictions.update().where(predictions.c.id == scored["id"]).values(stored_image=str(image)))
    history.record_feedback(scored["id"], "ai_generated", client_id="uploads", reviewer="ana", note="seen upstream")
    history.record_feedback(scored["id"], "real", reviewer="ben")  # the newest counts
    with pytest.raises(KeyError):
        history.record_feedback(str(uuid.uuid4()), "real")
    given = history.get(scored["id"])["feedback"]
    assert [(f["label"], f["reviewer"]) for f in given] == [("ai_generated", "ana"), ("real", "ben")]
    assert given[0]["client_id"] == "uploads" and given[0]["note"] == "seen upstream"
    assert history.get(other["id"])["feedback"] == []
    assert history.corrected_images() == {"ai_generated": [], "real": [str(image)]}
    out = io.StringIO()
    history.export(out, "jsonl")
    exported = {record["id"]: record for record in map(json.loads, out.getvalue().splitlines())}
    assert [f["label"] for f in exported[scored["id"]]["feedback"]] == ["ai_generated", "real"]
