import csv
import io
import json

import pytest

from dualsight_hf.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def images_with_a_broken_file(image_dir):
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return image_dir


def test_predict_folder_with_a_broken_file(capsys, tiny_model_dir, images_with_a_broken_file):
    code, out, err = run(capsys, "predict", str(images_with_a_broken_file), "--model", str(tiny_model_dir),
                         "--format", "json", "--batch-size", "2")
    results = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert set(results) == {"a.jpg", "b.png", "c.png", "broken.jpg"}
    for name in ("a.jpg", "b.png", "c.png"):
        assert results[name]["error"] is None and results[name]["label"] in {"real", "ai_generated"}
        assert len(results[name]["authenticity"]) == 2
    broken = results["broken.jpg"]["error"]
    assert "broken.jpg" in broken and "\n" not in broken and results["broken.jpg"]["label"] is None
    assert code == 1
    assert "3 scored, 1 failed" in err and "broken.jpg" in err


def test_predict_all_good_exits_zero_and_csv(capsys, tiny_model_dir, image_dir):
    code, out, _ = run(capsys, "predict", str(image_dir / "a.jpg"), str(image_dir / "b.png"), "--model",
                       str(tiny_model_dir), "--format", "csv", "--top-k", "2", "--object-threshold", "0")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a.jpg", "b.png"]
    assert all(len(r["objects"].split("; ")) == 2 and not r["error"] for r in rows)


def test_predict_table_and_missing_path(capsys, tiny_model_dir, image_dir, tmp_path):
    code, out, _ = run(capsys, "predict", str(image_dir / "a.jpg"), str(tmp_path / "nope.png"), "--model",
                       str(tiny_model_dir))
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["path", "label", "score", "objects"]
    assert any("a.jpg" in line and ("real" in line or "ai_generated" in line) for line in lines)
    assert any("nope.png: no such file" in line for line in lines)
    assert code == 1


def test_predict_writes_output_file(capsys, tiny_model_dir, image_dir, tmp_path):
    target = tmp_path / "results.json"
    code, _, _ = run(capsys, "predict", str(image_dir), "--model", str(tiny_model_dir), "--format", "json",
                     "--output", str(target))
    assert code == 0 and len(json.loads(target.read_text())) == 3
