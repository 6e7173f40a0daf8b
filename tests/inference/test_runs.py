"""A `dualsight predict` run: every output format, results written as they come, counts, resuming, inputs from a
list or a dataset, several ranks merged into one output."""

import csv
import io
import json
import subprocess
import sys

import pytest
from conftest import REPO, random_image

from dualsight_hf.cli import main
from dualsight_hf.inference.predictor import Predictor, iter_inputs
from dualsight_hf.inference.results import read_results
from dualsight_hf.inference.runs import write_predictions


def test_a_run_counts_what_it_scored_and_a_resumed_run_scores_only_the_rest(tiny_model_dir, image_dir, tmp_path):
    predictor = Predictor(str(tiny_model_dir), batch_size=2, num_workers=0, evidence="pixels")
    (tmp_path / "broken.png").write_bytes(b"")
    paths = [str(image_dir), str(tmp_path / "broken.png")]
    out = tmp_path / "results.jsonl"
    run = write_predictions(predictor, lambda: iter_inputs(paths), out, "jsonl")
    assert (run.scored, run.failed, run.kept) == (3, 1, 0)
    assert [result.error is None for result in read_results(out)] == [True, True, True, False]
    random_image(seed=9).save(tmp_path / "new.png")
    again = write_predictions(predictor, lambda: iter_inputs([*paths, str(tmp_path / "new.png")]), out, "jsonl",
                              resume=True)
    assert (again.scored, again.failed, again.kept) == (1, 0, 4)
    assert [result.path for result in read_results(out)][-1] == str(tmp_path / "new.png")


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_every_output_format(capsys, tiny_model_dir, many_images, fmt):
    code = main(["predict", str(many_images), "--model", str(tiny_model_dir), "--format", fmt])
    out = capsys.readouterr().out
    assert code == 1  # the broken file
    if fmt == "json":
        rows = json.loads(out)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in out.splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
    else:
        lines = out.splitlines()
        assert lines[0].split()[:3] == ["path", "label", "score"] and len(lines) == 12
        assert "05-broken.jpg  ERROR" in out and "not an image: the file holds HTML" in out
        return
    assert len(rows) == 11 and [int(r["index"]) for r in rows] == list(range(11))
    broken = [r for r in rows if r["path"].endswith("05-broken.jpg")][0]
    assert "HTML" in broken["error"] and not broken["label"]


def test_resume_scores_only_new_inputs(capsys, tiny_model_dir, many_images, tmp_path):
    output = tmp_path / "results.jsonl"
    assert main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output)]) == 1
    first = read_results(output)
    random_image(40, 30, seed=99).save(many_images / "99.png")
    capsys.readouterr()
    assert main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output),
                 "--resume"]) == 0
    assert "1 scored, 0 failed, 11 kept from the earlier run" in capsys.readouterr().err
    again = read_results(output)
    assert len(again) == 12 and len({r.path for r in again}) == 12
    assert [r.path for r in again[:11]] == [r.path for r in first]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_resume_with_other_formats(tiny_model_dir, many_images, tmp_path, suffix):
    output = tmp_path / f"results{suffix}"
    main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output)])
    random_image(40, 30, seed=98).save(many_images / "98.png")
    main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output), "--resume"])
    results = read_results(output, suffix.lstrip("."))
    assert len(results) == 12 and len({r.path for r in results}) == 12


def test_paths_from_file_and_dataset_inputs(capsys, tiny_model_dir, many_images, tmp_path):
    listing = tmp_path / "paths.txt"
    listing.write_text(f"# two files\n{many_images / '00.png'}\n\n{many_images / '01.png'}\n")
    assert main(["predict", "--paths-from", str(listing), "--model", str(tiny_model_dir), "--format",
                 "jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    import datasets

    table = datasets.Dataset.from_dict({"image": [random_image(seed=i) for i in range(3)], "label": [0, 1, 0]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))
    table.save_to_disk(tmp_path / "ds")
    assert main(["predict", "--dataset", str(tmp_path / "ds"), "--model", str(tiny_model_dir), "--format",
                 "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [f"{tmp_path / 'ds'}:{i}" for i in range(3)]


def test_two_processes_merge_one_output_without_duplicates_or_gaps(tiny_model_dir, many_images, tmp_path):
    output = tmp_path / "merged.jsonl"
    result = subprocess.run([sys.executable, "-m", "dualsight_hf.cli", "predict", str(many_images), "--model",
                             str(tiny_model_dir), "--output", str(output), "--num-processes", "2",
                             "--batch-size", "2"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]  # one broken file
    merged = read_results(output)
    assert [r.index for r in merged] == list(range(11))
    assert len({r.path for r in merged}) == 11
    assert not list(tmp_path.glob("merged.jsonl.rank*"))
    single = Predictor(str(tiny_model_dir), num_workers=0).predict_paths([many_images])
    for a, b in zip(merged, single):
        assert a.path == b.path and a.label == b.label
        if a.score is not None:
            assert a.score == pytest.approx(b.score, abs=1e-3)


def test_an_interrupted_resume_keeps_the_earlier_json(tiny_model_dir, many_images, tmp_path, monkeypatch):
    output = tmp_path / "results.json"
    main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output)])
    before = output.read_text()
    random_image(40, 30, seed=97).save(many_images / "97.png")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Predictor, "stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["predict", str(many_images), "--model", str(tiny_model_dir), "--output", str(output), "--resume"])
    assert output.read_text() == before


def test_resume_needs_a_readable_output_format(tiny_model_dir, many_images):
    with pytest.raises(SystemExit, match="--resume needs --output in jsonl, csv or json"):
        main(["predict", str(many_images), "--model", str(tiny_model_dir), "--resume"])


@pytest.mark.parametrize("stderr_terminal, output_format, to_file, bar", [
    (True, "table", False, True),   # the table comes at the end: the bar shows meanwhile
    (True, "jsonl", False, False),  # results stream onto the terminal: a bar would garble them
    (True, "jsonl", True, True),
    (False, "table", False, False),  # a log file gets no bar
])
def test_a_progress_bar_only_on_a_terminal_and_never_across_streamed_results(
        capsys, monkeypatch, tiny_model_dir, image_dir, tmp_path, stderr_terminal, output_format, to_file, bar):
    predictor = Predictor(str(tiny_model_dir), batch_size=2, num_workers=0, evidence="pixels")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: stderr_terminal)
    output = tmp_path / f"results.{output_format}" if to_file else None
    run = write_predictions(predictor, lambda: iter_inputs([str(image_dir)]), output, output_format)
    assert run.scored == 3
    assert ("predicting" in capsys.readouterr().err) is bar
