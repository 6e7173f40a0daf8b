"""The functions behind the web page: the analysis (with its Grad-CAM heatmap), batch CSV, error messages."""

import csv

import pytest
from conftest import save_tiny_model
from PIL import Image

from dualsight_hf.demo import BATCH_HEADERS, ModelCache, analyse, analyse_batch, verdict_markdown


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("demo-model"))
    models = ModelCache()
    models.loaded["default"] = models.get(str(folder))
    return models


def test_analyse_gives_everything_the_page_shows(cache, image_dir):
    result = analyse(str(image_dir / "a.jpg"), "default", heatmap=True, band=0.0, cache=cache)
    assert result["error"] is None
    assert set(result["authenticity"]) == {"real", "ai_generated"}
    assert sum(result["authenticity"].values()) == pytest.approx(1.0)
    assert result["decision"] == max(result["authenticity"], key=result["authenticity"].get)
    assert isinstance(result["heatmap"], Image.Image) and result["milliseconds"] > 0
    assert "ms" in verdict_markdown(result)
    wide = analyse(str(image_dir / "a.jpg"), "default", heatmap=False, band=0.49, cache=cache)
    assert wide["decision"] == "uncertain" and wide["heatmap"] is None
    assert "uncertain" in verdict_markdown(wide)


def test_the_page_answers_as_dualsight_predict(cache, image_dir, capsys):
    """The page scores through the `Predictor`, the loop `dualsight predict` runs: the same decision, the same
    probabilities."""
    import json

    from dualsight_hf.cli import main

    path = str(image_dir / "a.jpg")
    result = analyse(path, "default", heatmap=False, band=0.0, cache=cache)
    assert main(["predict", path, "--model", cache.get("default").model.name_or_path, "--format", "json",
                 "--uncertain-band", "0"]) == 0
    [expected] = json.loads(capsys.readouterr().out)
    assert result["decision"] == expected["label"]
    assert result["authenticity"] == pytest.approx({e["label"]: e["score"] for e in expected["authenticity"]},
                                                   abs=1e-6)
    assert result["objects"] == pytest.approx({o["label"]: o["score"] for o in expected["objects"]}, abs=1e-6)


@pytest.mark.parametrize("semantic_features", [True, False])
def test_analyse_a_model_with_an_artifact_stream(image_dir, tmp_path, semantic_features):
    folder = save_tiny_model(tmp_path / "model", artifact_stream={"crop_size": 16, "crops_per_side": 2,
                                                                  "semantic_features": semantic_features})
    models = ModelCache()
    result = analyse(str(image_dir / "a.jpg"), str(folder), heatmap=True, band=0.0, cache=models)
    assert result["error"] is None and sum(result["authenticity"].values()) == pytest.approx(1.0)
    # Grad-CAM explains the semantic backbone's share; an artifact-only head has none to show
    assert isinstance(result["heatmap"], Image.Image) == semantic_features


def test_bad_files_and_models_give_messages_not_tracebacks(cache, tmp_path):
    (tmp_path / "notes.jpg").write_text("hello, not an image")
    result = analyse(str(tmp_path / "notes.jpg"), "default", cache=cache)
    assert result["error"] == "notes.jpg: not an image: the file holds text"
    assert verdict_markdown(result) == "**Error:** notes.jpg: not an image: the file holds text"
    hub = analyse(str(tmp_path / "notes.jpg"), "some-org/not-reachable-model", cache=cache)
    assert "could not load 'some-org/not-reachable-model' from the Hugging Face Hub" in hub["error"]
    assert "\n" not in hub["error"]
    assert analyse(None, cache=cache)["error"] == "Upload an image first."


def test_batch_rows_and_csv(cache, image_dir, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"")
    paths = [str(image_dir / "a.jpg"), str(image_dir / "b.png"), str(tmp_path / "broken.png")]
    rows, csv_path = analyse_batch(paths, "default", band=0.0, cache=cache)
    assert [row[0] for row in rows] == ["a.jpg", "b.png", "broken.png"]
    assert rows[2][5] == "broken.png: empty file (0 bytes)" and rows[2][1] == ""
    with open(csv_path, newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == BATCH_HEADERS and len(written) == 4
    assert written[1][1] in {"real", "ai_generated"} and float(written[1][2]) == pytest.approx(rows[0][2])


def test_provenance_panel_and_a_signed_claim(cache, tmp_path, c2pa_signer):
    from conftest import image_bytes

    from dualsight_hf.demo import provenance_markdown

    signed = tmp_path / "signed.jpg"
    signed.write_bytes(c2pa_signer.sign(image_bytes("JPEG"), "image/jpeg"))
    result = analyse(str(signed), "default", heatmap=False, band=0.0, cache=cache)
    assert result["decision"] == "ai_generated" and result["decided_by"] == "provenance"
    assert "validly signed AI claim" in verdict_markdown(result)
    panel = provenance_markdown(result)
    assert "valid signature" in panel and "Example Generator Inc" in panel and "untrusted" in panel
    plain = tmp_path / "plain.png"
    plain.write_bytes(image_bytes("PNG"))
    assert provenance_markdown(analyse(str(plain), "default", heatmap=False, cache=cache)).startswith(
        "**Provenance:** no C2PA manifest")
    rows, _ = analyse_batch([str(signed), str(plain)], "default", cache=cache)
    assert rows[0][4] == "c2pa: ai_generated" and rows[1][4] == ""
