"""Reading examples: image folders, manifests, `datasets` datasets, object labels, unreadable images."""

import json

import datasets
import pytest
from conftest import random_image, shared_path, tiny_config

from dualsight_hf.data.augmentation import ImageTransform
from dualsight_hf.data.sources import drop_unreadable, encode_labels, load_examples
from dualsight_hf.models.image_processing import image_processor_for_backbone


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


def test_unreadable_training_images_are_dropped_and_counted(class_folder):
    (class_folder / "real" / "broken.jpg").write_bytes(b"not an image")
    (class_folder / "fake" / "empty.png").write_bytes(b"")
    kept, errors = drop_unreadable(load_examples(str(class_folder)))
    assert len(kept) == 7 and len(errors) == 2
    assert any("broken.jpg" in e for e in errors) and any("empty.png: empty file" in e for e in errors)
