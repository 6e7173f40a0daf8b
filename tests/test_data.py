import json
import random

import datasets
import numpy as np
import pytest
from PIL import Image

from conftest import random_image, shared_path, tiny_config
from dualsight_hf.data import (
    AugmentationSettings,
    ImageTransform,
    augment,
    balancing_weights,
    collate,
    down_up_scale,
    drop_unreadable,
    encode_labels,
    jpeg_recompress,
    load_examples,
    random_resized_crop,
    split_examples,
)
from dualsight_hf.image_processing import image_processor_for_backbone, image_processor_for_model


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "folder"
    for label, count in (("real", 4), ("fake", 3)):
        (root / label / "nested").mkdir(parents=True)
        for i in range(count):
            random_image(seed=i + (10 if label == "fake" else 0)).save(root / label / "nested" / f"{i}.png")
    return root


def test_image_folder_source(class_folder):
    table = load_examples(str(class_folder))
    assert len(table) == 7 and sorted(set(table["label"])) == ["fake", "real"]
    encoded = encode_labels(table, tiny_config(with_objects=False))
    assert sorted(encoded["label"]) == [0] * 4 + [1] * 3  # "fake" is the alias of ai_generated


def test_manifest_source_with_objects(tmp_path, class_folder):
    manifest = tmp_path / "manifest.csv"
    rows = ["path,label,source,objects", "folder/real/nested/0.png,real,a,person;car",
            "folder/fake/nested/0.png,ai_generated,b,", f"{class_folder}/real/nested/1.png,real,b,[]"]
    manifest.write_text("\n".join(rows) + "\n")
    table = load_examples(str(manifest))
    assert table["image"][0] == str(tmp_path / "folder/real/nested/0.png")
    assert [json.loads(o) for o in table["objects"]] == [["person", "car"], None, []]
    encoded = encode_labels(table, tiny_config())
    assert encoded["label"] == [0, 1, 0]
    assert encoded["object_labels"] == [[1.0, 1.0, 0.0], [-100.0] * 3, [0.0, 0.0, 0.0]]


def test_datasets_source_with_classlabel_and_custom_columns(tmp_path):
    features = datasets.Features({"img": datasets.Image(), "target": datasets.ClassLabel(names=["FAKE", "REAL"])})
    table = datasets.Dataset.from_dict({"img": [random_image(seed=i) for i in range(4)], "target": [0, 1, 1, 0]},
                                       features=features)
    table.save_to_disk(tmp_path / "saved")
    loaded = load_examples(str(tmp_path / "saved"), image_column="img", label_column="target")
    assert loaded["label"] == ["FAKE", "REAL", "REAL", "FAKE"]
    encoded = encode_labels(loaded, tiny_config(with_objects=False))
    assert encoded["label"] == [1, 0, 0, 1]
    batch = ImageTransform(image_processor_for_backbone(tiny_config().backbone_config))(encoded[:2])
    assert batch["pixel_values"].shape == (2, 3, 224, 224)


def test_combination_labels_from_pseudo_label_reach_a_single_label_head(tmp_path, class_folder):
    from conftest import tiny_config as make_config

    manifest = tmp_path / "m.csv"
    manifest.write_text('path,label,objects\nfolder/real/nested/0.png,real,"""cup, person"""\n'
                        'folder/real/nested/1.png,real,"""Unknown"""\n')
    config = make_config(object_problem_type="single_label_classification")
    config.object_id2label = {0: "Unknown", 1: "cup, person"}
    config.object_label2id = {"Unknown": 0, "cup, person": 1}
    assert encode_labels(load_examples(str(manifest)), config)["object_labels"] == [1, 0]


def test_unknown_label_is_a_clear_error(class_folder):
    table = load_examples(str(class_folder)).map(lambda e: {"label": "cartoon"})
    with pytest.raises(ValueError, match="'cartoon' is not one of the model's labels"):
        encode_labels(table, tiny_config())


def test_objects_file_merge(tmp_path):
    manifest = shared_path("data", "real-vs-ai", "manifest.csv")
    from conftest import REPO

    table = load_examples(str(manifest), objects_file=str(REPO / "data" / "real-vs-ai-voc-objects.csv"))
    objects = {row["path"]: json.loads(row["objects"]) for row in table}
    cifake_cat = next(p for p in objects if p.startswith("cifake-2spi/real/cat/"))
    assert objects[cifake_cat] == ["cat"]
    tiny = next(p for p in objects if p.startswith("ddpm-edit_detect") and "cifar" in p)
    assert objects[tiny] is None  # 32x32 DDPM images stay unlabelled


def write_collection(root, name, images, extra_column=None):
    """A manifest in `root/name/` whose images sit below it (`images`: relative path -> (label, seed))."""
    folder = root / name
    rows = ["path,label,source" + (f",{extra_column}" if extra_column else "")]
    for relative, (label, seed) in images.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        random_image(seed=seed).save(folder / relative)
        rows.append(f"{relative},{label},{name}" + (f",{seed}" if extra_column else ""))
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def test_several_manifests_are_read_against_their_own_folders(tmp_path):
    first = write_collection(tmp_path, "one", {"real/a.png": ("real", 1), "fake/b.png": ("fake", 2)})
    second = write_collection(tmp_path, "two", {"x/c.png": ("real", 3)}, extra_column="seed")
    table = load_examples([str(first), str(second)])
    assert table["image"] == [str(tmp_path / "one/real/a.png"), str(tmp_path / "one/fake/b.png"),
                              str(tmp_path / "two/x/c.png")]
    assert table["source"] == ["one", "one", "two"] and table["label"] == ["real", "fake", "real"]
    assert table["seed"] == [None, None, 3]  # a column one manifest lacks is empty in its rows
    objects = tmp_path / "objects-two.csv"
    objects.write_text('path,objects\nx/c.png,"[""dog""]"\n')
    merged = load_examples([str(first), str(second)], objects_file=[str(objects)])
    assert [json.loads(cell) for cell in merged["objects"]] == [None, None, ["dog"]]


def test_a_path_in_two_manifests_is_a_clear_error(tmp_path):
    first = write_collection(tmp_path, "one", {"real/a.png": ("real", 1)})
    second = write_collection(tmp_path, "two", {"real/a.png": ("real", 2)})
    with pytest.raises(ValueError, match="path 'real/a.png' is in both .*one/manifest.csv and .*two/manifest.csv"):
        load_examples([str(first), str(second)])


def test_both_shared_collections_load_together():
    real_vs_ai = shared_path("data", "real-vs-ai", "manifest.csv")
    photoreal = shared_path("data", "photoreal-multi-generator", "manifest.csv")
    table = load_examples([str(real_vs_ai), str(photoreal)])
    assert len(table) == 3458 + 819
    assert {"laboratoriet-realorai", "cifake-2spi", "whichfaceisreal-tpdne-ffhq"} <= set(table["source"])


def make_table(n_per_stratum=20, sources=("a", "b")):
    rows = {"label": [], "source": [], "image": []}
    for source in sources:
        for label in ("real", "fake"):
            rows["label"] += [label] * n_per_stratum
            rows["source"] += [source] * n_per_stratum
            rows["image"] += [f"{source}-{label}-{i}" for i in range(n_per_stratum)]
    return datasets.Dataset.from_dict(rows)


def test_split_is_deterministic_disjoint_and_stratified():
    table = make_table()
    first = split_examples(table, 0.2, 0.2, seed=7, stratify_by="source")
    second = split_examples(table, 0.2, 0.2, seed=7, stratify_by="source")
    other = split_examples(table, 0.2, 0.2, seed=8, stratify_by="source")
    assert all(first[k]["image"] == second[k]["image"] for k in first)
    assert first["test"]["image"] != other["test"]["image"]
    names = [set(first[k]["image"]) for k in ("train", "validation", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert sum(map(len, names)) == len(table)
    for split, expected in (("test", 4), ("validation", 4), ("train", 12)):
        for source in ("a", "b"):
            for label in ("real", "fake"):
                count = sum(1 for r in first[split] if r["source"] == source and r["label"] == label)
                assert count == expected, (split, source, label)


def test_copies_of_one_file_share_a_split(tmp_path):
    """The same bytes stored under two names (as one StyleGAN2 face in the shared data) never straddle train and
    test, whatever the seed."""
    folder = tmp_path / "images"
    folder.mkdir()
    rows = {"label": [], "image": []}
    for i in range(40):
        random_image(seed=i).save(folder / f"{i}.png")
        rows["label"].append("real" if i % 2 else "fake")
        rows["image"].append(str(folder / f"{i}.png"))
    (folder / "copy.png").write_bytes((folder / "0.png").read_bytes())
    rows["label"].append("fake")
    rows["image"].append(str(folder / "copy.png"))
    table = datasets.Dataset.from_dict(rows)
    for seed in range(12):
        splits = split_examples(table, 0.25, 0.25, seed=seed)
        where = [name for name, split in splits.items() for image in split["image"]
                 if image.endswith(("/0.png", "/copy.png"))]
        assert len(where) == 2 and where[0] == where[1], (seed, where)
        assert sum(len(split) for split in splits.values()) == len(table)


def test_balancing_weights_give_every_source_and_class_the_same_share():
    table = make_table(n_per_stratum=10, sources=("a",)).select(range(20))  # a/real 10, a/fake 10
    table = datasets.concatenate_datasets([table, datasets.Dataset.from_dict(
        {"label": ["real"] * 2 + ["fake"] * 6, "source": ["b"] * 8, "image": [f"b{i}" for i in range(8)]})])
    weights = np.array(balancing_weights(table, "source"))
    assert weights.sum() == pytest.approx(1.0)
    for source in ("a", "b"):
        for label in ("real", "fake"):
            rows = [i for i, row in enumerate(table) if row["source"] == source and row["label"] == label]
            assert weights[rows].sum() == pytest.approx(0.25), (source, label)
    by_class = np.array(balancing_weights(table, None))
    assert by_class[[i for i, label in enumerate(table["label"]) if label == "real"]].sum() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no column 'family'"):
        balancing_weights(table, "family")


@pytest.mark.parametrize("name, function", [
    ("crop", lambda im, rng: random_resized_crop(im, rng, (0.3, 0.6))),
    ("jpeg", lambda im, rng: jpeg_recompress(im, 30)),
    ("down_up", lambda im, rng: down_up_scale(im, 0.25)),
    ("all", lambda im, rng: augment(im, AugmentationSettings(flip_p=1, rotation_p=1, color_jitter_p=1, jpeg_p=1,
                                                             blur_p=1, rescale_p=1), rng)),
])
def test_augmentations_give_valid_rgb_images(name, function):
    image = random_image(64, 48, seed=3)
    out = function(image, random.Random(0))
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    if name in ("jpeg", "down_up", "all"):
        assert out.size == image.size or name == "all"
        assert list(out.getdata()) != list(image.getdata())
    if name == "crop":
        assert out.size[0] <= 64 and out.size[1] <= 48 and out.size != image.size


def test_train_transform_output_size_and_collate(class_folder):
    table = encode_labels(load_examples(str(class_folder)), tiny_config(with_objects=False))
    processor = image_processor_for_backbone(tiny_config().backbone_config)
    table.set_transform(ImageTransform(processor, AugmentationSettings(jpeg_p=1, blur_p=1, rescale_p=1), seed=0))
    batch = collate([table[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    assert batch["labels"].tolist() == table.with_format(None)["label"][:3]


def test_unreadable_training_images_are_dropped_and_counted(class_folder):
    (class_folder / "real" / "broken.jpg").write_bytes(b"not an image")
    (class_folder / "fake" / "empty.png").write_bytes(b"")
    kept, errors = drop_unreadable(load_examples(str(class_folder)))
    assert len(kept) == 7 and len(errors) == 2
    assert any("broken.jpg" in e for e in errors) and any("empty.png: empty file" in e for e in errors)


def test_leave_one_source_out_split():
    table = make_table()
    splits = split_examples(table, 0.25, 0.15, seed=1, stratify_by="source", holdout_column="source",
                            holdout_value="b")
    assert set(splits["test"]["source"]) == {"b"} and len(splits["test"]) == 40
    assert set(splits["train"]["source"]) == set(splits["validation"]["source"]) == {"a"}
    assert len(splits["train"]) + len(splits["validation"]) == 40 and len(splits["validation"]) == 10
    with pytest.raises(ValueError, match="no row has source = c"):
        split_examples(table, holdout_column="source", holdout_value="c")


def test_leave_several_sources_out():
    """A generator family of several sources: comma-separated values are all held out."""
    table = make_table(sources=("a", "b", "c"))
    splits = split_examples(table, 0.25, 0.15, seed=1, stratify_by="source", holdout_column="source",
                            holdout_value="b, c")
    assert set(splits["test"]["source"]) == {"b", "c"} and len(splits["test"]) == 80
    assert set(splits["train"]["source"]) == {"a"}
    with pytest.raises(ValueError, match="no row has source = d"):
        split_examples(table, holdout_column="source", holdout_value="a,d")


def test_artifact_view_augmentation_never_resamples_unless_rescaling():
    """With rescaling and JPEG off, the artifact view is the image or its mirror, pixel for pixel, even when the
    semantic view's rotation and blur are certain."""
    from dualsight_hf.data import augment_keeping_traces

    image = random_image(31, 20, seed=8)
    settings = AugmentationSettings(rotation_p=1, blur_p=1, jpeg_p=0, rescale_p=0, color_jitter_p=1)
    rng = random.Random(0)
    for _ in range(10):
        out = np.asarray(augment_keeping_traces(image, settings, rng))
        assert np.array_equal(out, np.asarray(image)) or np.array_equal(out, np.asarray(image)[:, ::-1])
    assert not np.array_equal(np.asarray(augment_keeping_traces(image, AugmentationSettings(jpeg_p=1), rng)),
                              np.asarray(image))


def test_transform_with_an_artifact_stream_takes_one_random_crop_in_training(class_folder):
    config = tiny_config(with_objects=False, artifact_stream={"crop_size": 16, "crops_per_side": 2})
    table = encode_labels(load_examples(str(class_folder)), config)
    processor = image_processor_for_model(config)
    table.set_transform(ImageTransform(processor, AugmentationSettings(), seed=0))
    batch = collate([table[i] for i in range(3)])
    assert batch["artifact_values"].shape == (3, 1, 3, 16, 16) and batch["pixel_values"].shape[0] == 3
    table.set_transform(ImageTransform(processor))
    batch = collate([table[i] for i in range(3)])
    assert batch["artifact_values"].shape == (3, 4, 3, 16, 16)


def test_a_recorded_split_is_read_back_in_its_order_and_missing_examples_are_named(tmp_path):
    from dualsight_hf.data import DataSourceError, example_keys, select_recorded_split, write_split_record

    folder = tmp_path / "data"
    for label in ("real", "fake"):
        (folder / label).mkdir(parents=True)
        for i in range(4):
            random_image(16, 16, seed=10 * i + len(label)).save(folder / label / f"{i}.png")
    table = load_examples(str(folder))
    splits = split_examples(table, 0.25, 0.25, seed=3)
    write_split_record(splits, {"split_seed": 3}, tmp_path, root=tmp_path)
    record = json.loads((tmp_path / "split.json").read_text())
    assert record["settings"] == {"split_seed": 3}
    assert all(not key.startswith(("/", "..")) for keys in record["splits"].values() for key in keys)
    for name in ("train", "validation", "test"):
        again = select_recorded_split(load_examples(str(folder)), tmp_path / "split.json", name, root=tmp_path)
        assert example_keys(again, tmp_path) == example_keys(splits[name], tmp_path) == record["splits"][name]
    (folder / "real" / "0.png").unlink()
    lost = "data/real/0.png"
    split = next(name for name, keys in record["splits"].items() if lost in keys)
    with pytest.raises(DataSourceError, match=f"1 of the {len(record['splits'][split])} {split} examples .* "
                                              f"not in the data \\(first: {lost}\\)"):
        select_recorded_split(load_examples(str(folder)), tmp_path / "split.json", split, root=tmp_path)
