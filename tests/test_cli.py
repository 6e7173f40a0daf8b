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
    assert lines[0].split()[:5] == ["path", "label", "score", "provenance", "objects"]
    assert any("a.jpg" in line and ("real" in line or "ai_generated" in line) for line in lines)
    assert any("nope.png: no such file" in line for line in lines)
    assert code == 1


def test_predict_writes_output_file(capsys, tiny_model_dir, image_dir, tmp_path):
    target = tmp_path / "results.json"
    code, _, _ = run(capsys, "predict", str(image_dir), "--model", str(tiny_model_dir), "--format", "json",
                     "--output", str(target))
    assert code == 0 and len(json.loads(target.read_text())) == 3


@pytest.fixture
def declared_images(tmp_path, c2pa_signer):
    """A signed AI image, a PNG with AUTOMATIC1111 parameters, and a plain photo."""
    from conftest import image_bytes
    from PIL import PngImagePlugin

    folder = tmp_path / "declared"
    folder.mkdir()
    (folder / "signed.jpg").write_bytes(c2pa_signer.sign(image_bytes("JPEG", seed=1), "image/jpeg"))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Seed: 1")
    (folder / "a1111.png").write_bytes(image_bytes("PNG", seed=2, pnginfo=info))
    (folder / "plain.jpg").write_bytes(image_bytes("JPEG", seed=3))
    return folder


def test_predict_reports_provenance_in_every_format(capsys, tiny_model_dir, declared_images):
    code, out, _ = run(capsys, "predict", str(declared_images), "--model", str(tiny_model_dir), "--format", "json")
    results = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    signed, a1111, plain = results["signed.jpg"], results["a1111.png"], results["plain.jpg"]
    assert (signed["label"], signed["score"], signed["decided_by"]) == ("ai_generated", 1.0, "provenance")
    assert signed["provenance"]["issuer"] == "Example Generator Inc" and signed["provenance"]["valid"] is True
    assert len(signed["authenticity"]) == 2  # the pixel scores are still there
    assert a1111["provenance"]["generator"] == "AUTOMATIC1111 Stable Diffusion WebUI"
    assert a1111["decided_by"] == "pixels" and a1111["label"] == a1111["authenticity"][0]["label"]
    assert a1111["provenance"]["disagrees"] is (a1111["label"] == "real")
    assert plain["provenance"]["claim"] == "none" and plain["decided_by"] == "pixels"

    code, out, _ = run(capsys, "predict", str(declared_images), "--model", str(tiny_model_dir), "--format", "csv")
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(io.StringIO(out))}
    assert json.loads(rows["signed.jpg"]["provenance"])["source"] == "c2pa" and rows["signed.jpg"]["decided_by"] == \
        "provenance"

    code, out, _ = run(capsys, "predict", str(declared_images), "--model", str(tiny_model_dir))
    line = next(line for line in out.splitlines() if "signed.jpg" in line)
    assert "c2pa: ai_generated (valid, Example Generator Inc)" in line and "ai_generated" in line.split()[1]


@pytest.mark.parametrize("evidence", ["pixels", "provenance"])
def test_predict_evidence_choice(capsys, tiny_model_dir, declared_images, evidence):
    code, out, _ = run(capsys, "predict", str(declared_images), "--model", str(tiny_model_dir), "--format", "json",
                       "--evidence", evidence)
    results = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert code == 0
    if evidence == "pixels":
        assert all(r["provenance"] is None and r["decided_by"] == "pixels" and r["authenticity"]
                   for r in results.values())
    else:  # the files' own declarations, without the model
        assert results["signed.jpg"]["label"] == "ai_generated" and results["signed.jpg"]["authenticity"] == []
        assert results["plain.jpg"]["label"] == "uncertain" and results["a1111.png"]["label"] == "uncertain"


@pytest.mark.parametrize(("argv", "missing", "extra"), [
    (["demo"], "gradio", "demo"),
    (["serve"], "uvicorn", "serve"),
    (["history", "export"], "sqlalchemy", "serve"),
])
def test_a_missing_extra_is_one_line_saying_what_to_install(argv, missing, extra, monkeypatch, capsys):
    """Without the optional extra a command needs (its module made unimportable here), the command stops with one
    line naming the extra and the pip command, not a traceback."""
    import sys

    for name in [name for name in sys.modules if name == missing or name.startswith(f"{missing}.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [name for name in sys.modules if name.startswith(("dualsight_hf.serve", "dualsight_hf.demo"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    message = str(stopped.value)
    assert len(message.splitlines()) == 1 and f"needs the {extra} extra" in message
    assert f"pip install dualsight-hf[{extra}]" in message


#: optional or heavy libraries that a `dualsight predict` run has no use for: each costs start-up time
NOT_IMPORTED_BY_PREDICT = ("gradio", "matplotlib", "onnx", "onnxruntime", "datasets", "fastapi", "sqlalchemy",
                           "sklearn", "pandas", "c2pa")


def test_predict_imports_no_optional_library(tiny_model_dir, image_dir):
    """What keeps `dualsight predict` starting fast: none of the libraries of the other commands and extras is
    imported on its way (they are imported where they are used)."""
    import subprocess
    import sys

    script = ("import sys\nfrom dualsight_hf.cli import main\n"
              f"main(['predict', {str(image_dir)!r}, '--model', {str(tiny_model_dir)!r}, '--format', 'json'])\n"
              f"print([name for name in {NOT_IMPORTED_BY_PREDICT!r} if name in sys.modules])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:]
