"""What `dualsight predict` writes: the per-input `PredictionResult`, the writers for table, JSON,
JSON Lines and CSV output, reading results back (`--resume`), and merging the shards of several processes.
"""

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

OUTPUT_FORMATS = ("table", "json", "jsonl", "csv")
CSV_HEADER = ["index", "path", "label", "score", "objects", "authenticity", "error", "provenance", "decided_by"]


@dataclass
class PredictionResult:
    """
    What `dualsight predict` says about one input.

    Args:
        path (`str`): the input: a file path, or `DATASET:ROW` for a row of a `datasets` dataset.
        index (`int`): position of the input in the run's input order.
        label (`str`, *optional*): the authenticity decision: a class, or `"uncertain"` inside the model's
            uncertain band (see `pipeline.authenticity_decision`).
        score (`float`, *optional*): its calibrated probability (for `"uncertain"`: that of class 1).
        authenticity (`list[dict]`): every authenticity class with its probability, best first.
        objects (`list[dict]`): the object head's top classes with scores (empty without an object head).
        error (`str`, *optional*): the one-line reason when the input could not be scored; the other fields are
            then empty.
        provenance (`dict`, *optional*): what the file declares about its origin (`provenance.Provenance` as a dict:
            `claim`, `source`, `signed`, `valid`, `issuer`, `generator`, `details`, and `disagrees`: the evidence
            contradicts the pixel verdict); `None` with `evidence="pixels"`.
        decided_by (`str`, *optional*): `"pixels"`, or `"provenance"` when a validly signed C2PA claim of AI
            generation set the label (see `provenance.decide`).
    """

    path: str
    index: int = -1
    label: str | None = None
    score: float | None = None
    authenticity: list = field(default_factory=list)
    objects: list = field(default_factory=list)
    error: str | None = None
    provenance: dict | None = None
    decided_by: str | None = None


def _csv_row(result: PredictionResult) -> list:
    return [result.index, result.path, result.label or "", "" if result.score is None else f"{result.score:.6f}",
            "; ".join(f"{o['label']}:{o['score']:.4f}" for o in result.objects),
            json.dumps(result.authenticity) if result.authenticity else "", result.error or "",
            json.dumps(result.provenance) if result.provenance else "", result.decided_by or ""]


def read_results(path, output_format: str = "jsonl") -> list[PredictionResult]:
    """Results written earlier as `jsonl`, `json` or `csv` (for `--resume` and merging)."""
    path = Path(path)
    if output_format not in ("jsonl", "json", "csv"):
        raise ValueError(f"results written as {output_format} cannot be read back: use jsonl, json or csv")
    if not path.exists() or path.stat().st_size == 0:
        return []
    if output_format == "csv":
        with path.open(newline="") as handle:
            return [PredictionResult(path=row["path"], index=int(row["index"]), label=row["label"] or None,
                                     score=float(row["score"]) if row["score"] else None,
                                     authenticity=json.loads(row["authenticity"]) if row["authenticity"] else [],
                                     objects=[{"label": o.rsplit(":", 1)[0], "score": float(o.rsplit(":", 1)[1])}
                                              for o in row["objects"].split("; ") if o],
                                     error=row["error"] or None,
                                     provenance=json.loads(row["provenance"]) if row.get("provenance") else None,
                                     decided_by=row.get("decided_by") or None)
                    for row in csv.DictReader(handle)]
    text = path.read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in
                                                                      text.splitlines() if line.strip()]
    return [PredictionResult(**record) for record in records]


class ResultWriter:
    """
    Writes results in one of `OUTPUT_FORMATS`. `jsonl` and `csv` are written and flushed one result at a time;
    `table` and `json` are written when the run ends, in input order.

    Args:
        handle: a text file (or standard output).
        output_format (`str`): `table`, `json`, `jsonl` or `csv`.
        header (`bool`, *optional*, defaults to `True`): write the CSV header (not when appending to a file).
    """

    def __init__(self, handle, output_format: str, header: bool = True):
        self.handle, self.format, self.held = handle, output_format, []
        if output_format == "csv":
            self.csv = csv.writer(handle)
            if header:
                self.csv.writerow(CSV_HEADER)

    def write(self, result: PredictionResult) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(asdict(result)) + "\n")
        elif self.format == "csv":
            self.csv.writerow(_csv_row(result))
        else:
            self.held.append(result)
            return
        self.handle.flush()

    def close(self) -> None:
        results = sorted(self.held, key=lambda r: r.index)
        if self.format == "json":
            json.dump([asdict(r) for r in results], self.handle, indent=2)
            self.handle.write("\n")
        elif self.format == "table":
            write_table(results, self.handle)
        self.handle.flush()


def write_table(results: list[PredictionResult], handle) -> None:
    """An aligned, human-readable table: path, label, score, provenance, objects; failed inputs show their error."""
    rows = [(os.path.relpath(r.path) if os.path.isabs(r.path) else r.path, r.label or "-",
             "" if r.score is None else f"{r.score:.3f}", provenance_summary(r.provenance),
             ", ".join(f"{o['label']} {o['score']:.2f}" for o in r.objects), r.error) for r in results]
    header = ("path", "label", "score", "provenance", "objects")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        if len(row) == 6 and row[5]:
            handle.write(f"{str(row[0]).ljust(widths[0])}  ERROR {row[5]}\n")
            continue
        handle.write("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + str(row[4]) + "\n")


def provenance_summary(provenance: dict | None) -> str:
    """One short cell: `-` without evidence, else the claim, its source and, for C2PA, validity and issuer; a `!`
    marks evidence that contradicts the pixel verdict."""
    if not provenance or (provenance["claim"] == "none" and provenance["source"] is None):
        return "-"
    text = f"{provenance['source']}: {provenance['claim']}"
    if provenance["signed"]:
        text += f" ({'valid' if provenance['valid'] else 'INVALID'}, {provenance['issuer'] or 'unknown signer'})"
    elif provenance.get("generator"):
        text += f" ({provenance['generator']})"
    return text + (" !" if provenance.get("disagrees") else "")


def shard_path(output: Path, rank: int, world_size: int) -> Path:
    return output.with_name(f"{output.name}.rank{rank}-of-{world_size}.jsonl")


def merge_shards(output: Path, world_size: int, output_format: str, previous: list[PredictionResult],
                 timeout: float = 3600.0) -> list[PredictionResult]:
    """
    Rank 0's last step: wait for every rank's shard to be complete, then write one output with the results of an
    earlier run (`previous`, kept first) and every shard, each input once, in input order.
    """
    done = [shard_path(output, r, world_size).with_suffix(".done") for r in range(world_size)]
    deadline = time.monotonic() + timeout
    while not all(marker.exists() for marker in done):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{output}: not every rank finished within {timeout:.0f} s")
        time.sleep(0.2)
    seen = {r.path for r in previous}
    fresh = []
    for rank in range(world_size):
        for result in read_results(shard_path(output, rank, world_size), "jsonl"):
            if result.path not in seen:
                seen.add(result.path)
                fresh.append(result)
    merged = previous + sorted(fresh, key=lambda r: r.index)
    with output.open("w", newline="") as handle:
        writer = ResultWriter(handle, output_format)
        for result in merged:
            writer.write(result)
        writer.close()
    for rank in range(world_size):
        shard_path(output, rank, world_size).unlink()
        done[rank].unlink()
    return merged


def output_format_for(output: str | None, explicit: str | None = None) -> str:
    """The output format: `explicit` when given, else from the suffix of `output` (`.jsonl`, `.json`, `.csv`), else
    `table`."""
    if explicit:
        return explicit
    suffix = Path(output).suffix.lower() if output else ""
    return {".jsonl": "jsonl", ".json": "json", ".csv": "csv"}.get(suffix, "table")
