"""What `dualsight predict` writes: every readable format reads back as it was written, the table shows what a person
needs, several ranks' shards merge into one output, and the format follows the output's suffix."""

import io

import pytest

from dualsight_hf.inference.results import (
    PredictionResult,
    ResultWriter,
    merge_shards,
    output_format_for,
    provenance_summary,
    read_results,
    shard_path,
)

DECLARED = {"claim": "ai_generated", "source": "c2pa", "signed": True, "valid": False, "issuer": "Example CA",
            "generator": None, "details": {}, "disagrees": True}
RESULTS = [
    PredictionResult(path="a.png", index=0, label="real", score=0.91,
                     authenticity=[{"label": "real", "score": 0.91}, {"label": "ai_generated", "score": 0.09}],
                     objects=[{"label": "cat", "score": 0.8}, {"label": "dog: a breed", "score": 0.1}]),
    PredictionResult(path="b.jpg", index=1, error="not an image: the file holds HTML"),
    PredictionResult(path="c.png", index=2, label="uncertain", score=0.52,
                     authenticity=[{"label": "ai_generated", "score": 0.52}, {"label": "real", "score": 0.48}],
                     provenance=DECLARED, decided_by="pixels"),
]


def written(output_format: str, results=RESULTS) -> str:
    handle = io.StringIO()
    writer = ResultWriter(handle, output_format)
    for result in reversed(results):  # results come out of order from several reading threads
        writer.write(result)
    writer.close()
    return handle.getvalue()


@pytest.mark.parametrize("output_format", ["jsonl", "json", "csv"])
def test_every_readable_format_reads_back_what_was_written(tmp_path, output_format):
    path = tmp_path / f"results.{output_format}"
    path.write_text(written(output_format))
    back = read_results(path, output_format)
    expected = RESULTS if output_format == "json" else list(reversed(RESULTS))  # json and the table are sorted
    assert back == expected


def test_the_table_is_sorted_and_shows_errors_provenance_and_objects():
    lines = written("table").splitlines()
    assert lines[0].split() == ["path", "label", "score", "provenance", "objects"]
    assert lines[1].split()[:3] == ["a.png", "real", "0.910"] and lines[1].endswith("cat 0.80, dog: a breed 0.10")
    assert lines[2] == "b.jpg  ERROR not an image: the file holds HTML"
    assert "c2pa: ai_generated (INVALID, Example CA) !" in lines[3] and lines[3].startswith("c.png")


def test_provenance_summary_says_nothing_without_evidence():
    assert provenance_summary(None) == "-"
    assert provenance_summary({**DECLARED, "claim": "none", "source": None}) == "-"
    assert provenance_summary({**DECLARED, "signed": False, "generator": "DALL-E", "disagrees": False}) == \
        "c2pa: ai_generated (DALL-E)"


def test_the_table_cannot_be_read_back():
    with pytest.raises(ValueError, match="cannot be read back: use jsonl, json or csv"):
        read_results("results.txt", "table")


def test_shards_merge_into_one_output_each_input_once_in_order_after_the_earlier_run(tmp_path):
    output = tmp_path / "merged.csv"
    earlier = [PredictionResult(path="old.png", index=7, label="real", score=0.7)]
    shards = {0: [RESULTS[2], RESULTS[0]], 1: [RESULTS[1], PredictionResult(path="old.png", index=7, label="real")]}
    for rank, results in shards.items():
        shard_path(output, rank, 2).write_text(written("jsonl", results))
        shard_path(output, rank, 2).with_suffix(".done").touch()
    merged = merge_shards(output, 2, "csv", earlier)
    assert [result.path for result in merged] == ["old.png", "a.png", "b.jpg", "c.png"]
    assert read_results(output, "csv") == merged
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged.csv"]  # shards and markers removed


def test_a_rank_that_never_finishes_is_named_by_a_timeout(tmp_path):
    output = tmp_path / "merged.jsonl"
    shard_path(output, 0, 2).with_suffix(".done").touch()
    with pytest.raises(TimeoutError, match="not every rank finished within 0 s"):
        merge_shards(output, 2, "jsonl", [], timeout=0.3)


@pytest.mark.parametrize("output, explicit, expected", [
    (None, None, "table"), ("out.JSONL", None, "jsonl"), ("out.json", None, "json"), ("out.csv", None, "csv"),
    ("out.txt", None, "table"), ("out.csv", "json", "json"),
])
def test_the_format_follows_the_suffix_unless_given(output, explicit, expected):
    assert output_format_for(output, explicit) == expected
