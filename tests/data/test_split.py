"""The train / validation / test split, its record, and the balancing weights."""

import json

import datasets
import numpy as np
import pytest
from conftest import random_image

from dualsight_hf.data.sources import load_examples
from dualsight_hf.data.split import balancing_weights, split_examples


def make_table(n_per_stratum=20, sources=("a", "b")):
    """`n_per_stratum` rows of each label per source, with distinct image names."""
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


def test_a_recorded_split_is_read_back_in_its_order_and_missing_examples_are_named(tmp_path):
    from dualsight_hf.data.sources import DataSourceError
    from dualsight_hf.data.split import example_keys, select_recorded_split, write_split_record

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
