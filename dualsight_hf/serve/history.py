"""
The prediction history: every decision the service makes, in SQLite (default, WAL mode) or PostgreSQL, through
SQLAlchemy Core, with the schema versioned by Alembic migrations (`dualsight_hf/serve/migrations/`).
"""

import csv
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS = Path(__file__).parent / "migrations"
EXPORT_FORMATS = ("csv", "jsonl")

metadata = sa.MetaData()

#: One row per scored image; `image_index` is its position among the request's files. `authenticity` holds every
#: class with its probability, best first; `objects` the object head's top classes; `provenance` what the file
#: declares about its origin (`provenance.Provenance`) and `decided_by` whether the pixels or a signed claim decided.
predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("request_id", sa.String(36), nullable=False, index=True),
    sa.Column("image_index", sa.Integer, nullable=False),
    sa.Column("client_id", sa.String(128), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("file_name", sa.String(512), nullable=True),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("model_id", sa.String(512), nullable=False, index=True),
    sa.Column("model_revision", sa.String(64), nullable=True),
    sa.Column("label", sa.String(64), nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("uncertain", sa.Boolean, nullable=False),
    sa.Column("decision_threshold", sa.Float, nullable=False),
    sa.Column("authenticity", sa.JSON, nullable=False),
    sa.Column("objects", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("stored_image", sa.String(1024), nullable=True),
    sa.Column("provenance", sa.JSON, nullable=True),
    sa.Column("decided_by", sa.String(16), nullable=True),
)

#: A reviewer's correct label for a prediction (`POST /v1/feedback`); the newest one counts.
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("prediction_id", sa.String(36), sa.ForeignKey("predictions.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(128), nullable=True),
    sa.Column("reviewer", sa.String(256), nullable=True),
    sa.Column("note", sa.String(2048), nullable=True),
)

COLUMNS = [column.name for column in predictions.columns] + ["feedback"]


class HistoryUnavailable(RuntimeError):
    """The history database cannot be reached or written; `str(error)` is one line."""


def database_url(value: str) -> str:
    """
    A SQLAlchemy URL from what a user types: a plain file path means SQLite; `postgresql://` URLs get the psycopg 3
    driver (the `serve` extra installs it) unless they name one.

    Example:

    ```python
    >>> from dualsight_hf.serve.history import database_url
    >>> database_url("history.sqlite3")
    'sqlite:///history.sqlite3'
    >>> database_url("postgresql://scorer@db/dualsight")
    'postgresql+psycopg://scorer@db/dualsight'
    ```
    """
    if "://" not in value:
        return f"sqlite:///{value}"
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def _sqlite_pragmas(connection, _record) -> None:
    # WAL: readers never block the writer; synchronous=FULL: a committed row survives a crash of the machine too
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class History:
    """
    The data-access layer of the prediction history. Every method that touches the database raises
    `HistoryUnavailable` (one line) when it cannot be reached; a failed write leaves nothing behind (one transaction
    per request).

    Args:
        url (`str`): a SQLAlchemy URL or a file path (SQLite); see `database_url`.
        upgrade (`bool`, *optional*, defaults to `True`): bring the schema to the newest migration on opening.

    Example:

    ```python
    >>> import tempfile
    >>> from dualsight_hf.serve.history import History
    >>> history = History(tempfile.mkdtemp() + "/history.sqlite3")
    >>> history.schema_version()
    '0003'
    >>> history.search()
    []
    ```
    """

    def __init__(self, url: str, upgrade: bool = True):
        self.url = database_url(url)
        # pre-ping: a connection that died while the database was away is replaced, so the service recovers by itself
        self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if upgrade:
            self.upgrade()

    def _alembic_config(self, connection):
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to `revision` (Alembic)."""
        from alembic import command

        try:
            with self.engine.begin() as connection:
                command.upgrade(self._alembic_config(connection), revision)
        except SQLAlchemyError as error:
            raise HistoryUnavailable(f"{self.display_url}: cannot prepare the history ({_first_line(error)})") from None

    def schema_version(self) -> str | None:
        """The Alembic revision the database is at (`None` before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self._connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @property
    def display_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def _connect(self):
        try:
            return self.engine.connect()
        except SQLAlchemyError as error:
            raise HistoryUnavailable(f"{self.display_url}: database unavailable ({_first_line(error)})") from None

    def ping(self) -> bool:
        """Whether the database answers."""
        try:
            with self._connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return True
        except (HistoryUnavailable, SQLAlchemyError):
            return False

    def record(self, rows: list[dict]) -> None:
        """Write `rows` (dicts with the `predictions` columns) in one transaction: all of them or none."""
        if not rows:
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(predictions.insert(), rows)
        except SQLAlchemyError as error:
            raise HistoryUnavailable(f"{self.display_url}: cannot write the history ({_first_line(error)})") from None

    def get(self, prediction_id: str) -> dict | None:
        """One prediction by id with its `feedback` (oldest first), or `None`."""
        rows = self._select(predictions.select().where(predictions.c.id == prediction_id))
        return self._with_feedback(rows)[0] if rows else None

    def _with_feedback(self, rows: list[dict]) -> list[dict]:
        if not rows:
            return rows
        query = (feedback.select().where(feedback.c.prediction_id.in_([row["id"] for row in rows]))
                 .order_by(feedback.c.created_at, feedback.c.id))
        given: dict[str, list] = {}
        for entry in self._select(query):
            given.setdefault(entry.pop("prediction_id"), []).append(entry)
        return [{**row, "feedback": given.get(row["id"], [])} for row in rows]

    def record_feedback(self, prediction_id: str, label: str, client_id: str | None = None,
                        reviewer: str | None = None, note: str | None = None) -> dict:
        """
        Store a correct label for a recorded prediction; returns the stored entry.

        Raises:
            `KeyError`: no prediction with that id.
        """
        entry = {"id": str(uuid.uuid4()), "prediction_id": prediction_id, "created_at": datetime.now(timezone.utc),
                 "label": label, "client_id": client_id, "reviewer": reviewer, "note": note}
        try:
            with self.engine.begin() as connection:
                found = connection.execute(sa.select(predictions.c.id).where(predictions.c.id == prediction_id))
                if found.first() is None:
                    raise KeyError(prediction_id)
                connection.execute(feedback.insert(), [entry])
        except SQLAlchemyError as error:
            raise HistoryUnavailable(f"{self.display_url}: cannot write the history ({_first_line(error)})") from None
        return entry

    def corrected_images(self) -> dict[str, list[str]]:
        """The stored images of predictions with feedback, by the newest feedback label: `{label: [paths]}`
        (images whose file is gone are left out)."""
        latest = {}
        for entry in self._select(feedback.select().order_by(feedback.c.created_at, feedback.c.id)):
            latest[entry["prediction_id"]] = entry["label"]
        stored = self._select(sa.select(predictions.c.id, predictions.c.stored_image).where(
            predictions.c.id.in_(list(latest)), predictions.c.stored_image.is_not(None))) if latest else []
        images: dict[str, list[str]] = {"ai_generated": [], "real": []}
        for row in stored:
            if Path(row["stored_image"]).is_file():
                images.setdefault(latest[row["id"]], []).append(row["stored_image"])
        return images

    def search(self, label: str | None = None, since: datetime | None = None, until: datetime | None = None,
               model: str | None = None, sha256: str | None = None, limit: int | None = 100,
               offset: int = 0) -> list[dict]:
        """
        Predictions that match every filter given, newest first.

        Args:
            label (`str`, *optional*): the authenticity label (`"uncertain"` included).
            since, until (`datetime`, *optional*): `since <= created_at < until`.
            model (`str`, *optional*): the model id.
            sha256 (`str`, *optional*): the image's sha256 (hex).
            limit (`int`, *optional*, defaults to 100), offset (`int`, *optional*, defaults to 0): the page; no
                limit when `limit` is `None`.
        """
        query = predictions.select()
        for column, value in (("label", label), ("model_id", model), ("sha256", sha256 and sha256.lower())):
            if value is not None:
                query = query.where(predictions.c[column] == value)
        if since is not None:
            query = query.where(predictions.c.created_at >= utc(since))
        if until is not None:
            query = query.where(predictions.c.created_at < utc(until))
        query = query.order_by(predictions.c.created_at.desc(), predictions.c.request_id,
                               predictions.c.image_index).offset(offset)
        return self._with_feedback(self._select(query.limit(limit) if limit is not None else query))

    def _select(self, query) -> list[dict]:
        try:
            with self._connect() as connection:
                return [_row(row) for row in connection.execute(query)]
        except SQLAlchemyError as error:
            raise HistoryUnavailable(f"{self.display_url}: cannot read the history ({_first_line(error)})") from None

    def export(self, handle, output_format: str = "jsonl") -> int:
        """
        Write the whole history, oldest first, as CSV (JSON columns as JSON text) or JSON lines; returns the count.
        """
        if output_format not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {output_format!r}; choose from {', '.join(EXPORT_FORMATS)}")
        query = predictions.select().order_by(predictions.c.created_at, predictions.c.request_id,
                                              predictions.c.image_index)
        writer = csv.writer(handle) if output_format == "csv" else None
        if writer:
            writer.writerow(COLUMNS)
        count = 0
        try:
            with self._connect() as connection:
                given: dict[str, list] = {}  # feedback is small next to the predictions: read it once
                for entry in connection.execute(feedback.select().order_by(feedback.c.created_at, feedback.c.id)):
                    entry = _row(entry)
                    given.setdefault(entry.pop("prediction_id"), []).append(entry)
                for row in connection.execution_options(yield_per=1000).execute(query):
                    record = _row(row)
                    record = as_json({**record, "feedback": given.get(record["id"], [])})
                    if writer:
                        writer.writerow([json.dumps(record[name]) if isinstance(record[name], (list, dict))
                                         else record[name] for name in COLUMNS])
                    else:
                        handle.write(json.dumps(record) + "\n")
                    count += 1
        except SQLAlchemyError as error:
            raise HistoryUnavailable(f"{self.display_url}: cannot read the history ({_first_line(error)})") from None
        return count

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already (SQLite keeps no time zone)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _row(row) -> dict:
    record = dict(row._mapping)
    if "created_at" in record:
        record["created_at"] = utc(record["created_at"])
    return record


def as_json(row: dict) -> dict:
    """A history row with JSON-ready values (timestamps in ISO 8601), its feedback entries too."""
    def plain(value):
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, list) and value and isinstance(value[0], dict) and "created_at" in value[0]:
            return [as_json(entry) for entry in value]
        return value

    return {name: plain(value) for name, value in row.items()}


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
