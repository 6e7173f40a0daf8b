import json

import numpy as np
import pytest
import torch
from conftest import random_image
from PIL import Image
from transformers import MobileNetV2Config, MobileNetV2ForSemanticSegmentation, MobileNetV2ImageProcessorPil

import dualsight_hf.data.pseudo_label as pseudo_label
from dualsight_hf.cli import main
from dualsight_hf.data.pseudo_label import (
    PseudoLabeler,
    PseudoLabelSettings,
    combination_label,
    label_examples,
    labels_from_predictions,
)
from dualsight_hf.data.sources import load_examples

VOCABULARY = {0: "background", 1: "person", 2: "car", 3: "dog"}


@pytest.fixture(scope="module")
def tiny_segmenter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segmenter")
    torch.manual_seed(0)
    config = MobileNetV2Config(depth_multiplier=0.25, image_size=64, id2label=VOCABULARY,
                               label2id={v: k for k, v in VOCABULARY.items()})
    model = MobileNetV2ForSemanticSegmentation(config).eval()
    with torch.no_grad():  # make "person" win everywhere, "car" second: a known answer
        model.segmentation_head.classifier.convolution.bias.copy_(torch.tensor([0.0, 50.0, 0.0, -50.0]))
    model.save_pretrained(folder)
    MobileNetV2ImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(
        folder)
    return folder


def mask(fraction: float, size: int = 100) -> Image.Image:
    array = np.zeros((size, size), dtype=np.uint8)
    array.flat[: int(fraction * size * size)] = 255
    return Image.fromarray(array)


def test_labels_from_segmentation_detection_and_classification_outputs():
    settings = PseudoLabelSettings(score_threshold=0.5, min_area=0.05)
    segmentation = [{"label": "background", "score": None, "mask": mask(0.5)},
                    {"label": "person", "score": None, "mask": mask(0.3)},
                    {"label": "dog", "score": None, "mask": mask(0.01)}]
    assert labels_from_predictions(segmentation, settings) == ["person"]
    detection = [{"label": "cup", "score": 0.9, "box": {}}, {"label": "person", "score": 0.7, "box": {}},
                 {"label": "cup", "score": 0.8, "box": {}}, {"label": "kite", "score": 0.2, "box": {}}]
    assert labels_from_predictions(detection, settings) == ["cup", "person"]
    assert labels_from_predictions([{"label": "tabby", "score": 0.6}], settings) == ["tabby"]
    assert combination_label(["person", "cup"]) == "cup, person" and combination_label([]) == "Unknown"


def test_task_is_read_from_the_architecture(tiny_segmenter):
    assert PseudoLabeler(str(tiny_segmenter)).task == "image-segmentation"


def test_labelling_and_cache(tiny_segmenter, tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        random_image(80, 60, seed=i).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    cache = tmp_path / "cache.jsonl"
    labeler = PseudoLabeler(str(tiny_segmenter), cache_file=cache, dtype=torch.float32)
    first = labeler.label(paths + [tmp_path / "broken.png"], progress=False)
    assert [first[str(p)] for p in paths] == [["person"]] * 3 and first[str(tmp_path / "broken.png")] is None
    assert len(cache.read_text().splitlines()) == 3

    def no_model(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(pseudo_label, "pipeline", no_model)
    again = PseudoLabeler(str(tiny_segmenter), cache_file=cache).label(paths, progress=False)
    assert again == {str(p): ["person"] for p in paths}
    combination = PseudoLabeler(str(tiny_segmenter), PseudoLabelSettings(combination=True), cache_file=cache)
    with pytest.raises(AssertionError, match="cache should have answered"):
        combination.label(paths, progress=False)  # other settings: not in the cache


def test_label_examples_with_category_map_and_min_size(tiny_segmenter, tmp_path, capsys):
    random_image(80, 80, seed=1).save(tmp_path / "big.png")
    random_image(16, 16, seed=2).save(tmp_path / "small.png")
    random_image(16, 16, seed=3).save(tmp_path / "cat.png")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,category\nbig.png,real,\nsmall.png,fake,\ncat.png,fake,cat\n")
    (tmp_path / "map.json").write_text(json.dumps({"cat": ["dog"]}))
    out = tmp_path / "objects.csv"
    assert main(["pseudo-label", "--data", str(manifest), "--model", str(tiny_segmenter), "--out", str(out),
                 "--category-map", str(tmp_path / "map.json"), "--min-size", "32"]) == 0
    rows = out.read_text().splitlines()
    assert rows == ["path,objects", 'big.png,"[""person""]"', 'cat.png,"[""dog""]"']
    table = load_examples(str(manifest), objects_file=str(out))
    assert [json.loads(o) for o in table["objects"]] == [["person"], None, ["dog"]]
    labeler = PseudoLabeler(str(tiny_segmenter), PseudoLabelSettings(combination=True))
    assert label_examples(table, labeler, {"cat": ["dog", "car"]}, min_size=32, progress=False) == \
        ["person", None, "car, dog"]


def test_category_map_alone_labels_only_the_mapped_rows(tmp_path, capsys):
    """
Without --model no labeller runs: rows with a mapped category are labelled, the rest stay unknown."""
    for name in ("face.png", "street.png"):
        random_image(40, 40, seed=len(name)).save(tmp_path / name)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,category\nface.png,real,face\nstreet.png,fake,city\n")
    (tmp_path / "map.json").write_text(json.dumps({"face": ["person"]}))
    out = tmp_path / "objects.csv"
    assert main(["pseudo-label", "--data", str(manifest), "--out", str(out),
                 "--category-map", str(tmp_path / "map.json")]) == 0
    assert out.read_text().splitlines() == ["path,objects", 'face.png,"[""person""]"']
    assert "1 of 2 images labelled" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="needs --model, --category-map or both"):
        main(["pseudo-label", "--data", str(manifest), "--out", str(out)])
