"""The train / validation / test split: made once, deterministically (`split_examples`), recorded beside the
model (`write_split_record`, `split.json`) and read back by every later step (`select_recorded_split`); and the
sampling weights that balance the training split over its strata.
"""

import collections
import hashlib
import json
import os
import random
from pathlib import Path

import datasets

from ..models.images import image_source
from .sources import DataSourceError


def split_examples(table: datasets.Dataset, validation_size: float = 0.15, test_size: float = 0.15, seed: int = 42,
                   stratify_by: str | None = None, holdout_column: str | None = None,
                   holdout_value: str | None = None) -> datasets.DatasetDict:
    """
    A deterministic train / validation / test split.

    Each stratum (label, plus the value of `stratify_by` when given, e.g. `source`) is shuffled with `seed` and cut
    by the fractions, so every source and class appears in every split in the same proportion, and the same seed
    always gives the same split. Copies of one file (the same bytes under several names) always share a split.

    Args:
        table (`datasets.Dataset`): examples with a `label` column.
        validation_size, test_size (`float`, *optional*, defaults to 0.15): fractions of each stratum.
        seed (`int`, *optional*, defaults to 42): shuffling seed.
        stratify_by (`str`, *optional*): extra column to stratify by.
        holdout_column, holdout_value (`str`, *optional*): leave groups out: every row whose `holdout_column` is
            one of the comma-separated `holdout_value` (e.g. `source` = `ddpm-edit_detect`, or
            `diffusiondb-vs-coco,cifake-2spi`) forms the test split, and train and validation come from the other
            rows only (`test_size` is then unused), to measure generalisation to sources the model never saw.

    Returns:
        `datasets.DatasetDict` with `train`, `validation` and `test`.
    """
    keys = table["label"] if stratify_by is None else list(zip(table[stratify_by], table["label"]))
    held_out = set()
    if holdout_column is not None:
        if holdout_column not in table.column_names:
            raise DataSourceError(f"no column '{holdout_column}' to hold out by")
        wanted = {value.strip() for value in str(holdout_value).split(",")}
        present = {str(value) for value in table[holdout_column]}
        if wanted - present:
            raise DataSourceError(f"no row has {holdout_column} = {', '.join(sorted(wanted - present))}")
        held_out = {i for i, value in enumerate(table[holdout_column]) if str(value) in wanted}
    strata = {}
    for index, key in enumerate(keys):
        if index not in held_out:
            strata.setdefault(str(key), []).append(index)
    rng = random.Random(seed)
    split_of = {index: "test" for index in held_out}
    for key in sorted(strata):
        indices = strata[key]
        rng.shuffle(indices)
        n_test = 0 if held_out else round(len(indices) * test_size)
        n_validation = round(len(indices) * validation_size)
        split_of.update({index: "test" for index in indices[:n_test]})
        split_of.update({index: "validation" for index in indices[n_test : n_test + n_validation]})
        split_of.update({index: "train" for index in indices[n_test + n_validation :]})
    for copies in duplicate_groups(table):  # a file stored twice goes where its first copy went
        first = next((split_of[i] for i in copies if split_of[i] == "test"), split_of[copies[0]])
        split_of.update({index: first for index in copies})
    parts = {name: [i for i in range(len(table)) if split_of[i] == name] for name in ("train", "validation", "test")}
    return datasets.DatasetDict({name: table.select(indices) for name, indices in parts.items()})


#: the file a training run writes beside `all_results.json`: which examples went to which split
SPLIT_RECORD = "split.json"


def example_keys(table: datasets.Dataset, root=".") -> list[str]:
    """
    A key per row that names its example across machines: the image's path relative to `root` (the folder the run
    started in), or `#<row>` for an image that is not a file (a decoded image or bytes from a `datasets` dataset,
    whose row order is that of its source).
    """
    root = Path(root).resolve()
    keys = []
    for index, item in enumerate(table.with_format(None)["image"]):
        source = image_source(item)
        keys.append(os.path.relpath(Path(source).resolve(), root) if isinstance(source, str) else f"#{index}")
    return keys


def write_split_record(splits: datasets.DatasetDict, settings: dict, out_dir, root=".") -> Path:
    """
    Record which examples a run put in each split (after any cap on their number), and with what settings, as
    `out_dir/split.json`: `{"settings": {...}, "splits": {"train": [key, ...], ...}}` with [`example_keys`]
    relative to `root`. Evaluation, the CLI and the benchmarks read it back with [`select_recorded_split`] instead
    of recomputing the split.

    Returns:
        `Path`: the file written.
    """
    path = Path(out_dir) / SPLIT_RECORD
    path.write_text(json.dumps({"settings": settings,
                                "splits": {name: example_keys(table, root) for name, table in splits.items()}},
                               indent=1))
    return path


def select_recorded_split(table: datasets.Dataset, record_file, split: str, root=".") -> datasets.Dataset:
    """
    The rows of `table` (the run's sources, loaded again) that the record `record_file` (see
    [`write_split_record`]) put in `split`, in the recorded order; raises `DataSourceError` naming how many recorded
    examples the data no longer has.
    """
    recorded = json.loads(Path(record_file).read_text())["splits"][split]
    row_of = {key: index for index, key in enumerate(example_keys(table, root))}
    missing = [key for key in recorded if key not in row_of]
    if missing:
        raise DataSourceError(f"{record_file}: {len(missing)} of the {len(recorded)} {split} examples it records are "
                              f"not in the data (first: {missing[0]}); is the data where the run read it, relative "
                              f"to {Path(root).resolve()}?")
    return table.select([row_of[key] for key in recorded])


def duplicate_groups(table: datasets.Dataset) -> list[list[int]]:
    """
    The row indices of every image file stored more than once (the same bytes under several names), so that a split
    can keep the copies together. Only rows whose image is a file path or bytes are compared.
    """
    by_digest = {}
    for index, item in enumerate(table.with_format(None)["image"]):
        source = image_source(item)
        try:
            content = source if isinstance(source, bytes) else Path(source).read_bytes()
        except (OSError, TypeError):
            continue
        by_digest.setdefault(hashlib.sha256(content).hexdigest(), []).append(index)
    return [indices for indices in by_digest.values() if len(indices) > 1]


def balancing_weights(table: datasets.Dataset, balance_by: str | None) -> list[float]:
    """
    Sampling weights that give every stratum (label, plus the value of `balance_by`, e.g. `source`) the same share
    of the draws: each example weighs 1 / (its stratum's size) / (the number of strata). Without `balance_by`,
    the classes alone are balanced.

    Args:
        table (`datasets.Dataset`): examples with a `label` column (and `balance_by`).
        balance_by (`str`, *optional*): the column to balance over besides the label.

    Returns:
        `list[float]`: one weight per example, summing to 1.
    """
    if balance_by is not None and balance_by not in table.column_names:
        raise DataSourceError(f"no column '{balance_by}' to balance the training examples by")
    plain = table.with_format(None)
    return stratum_weights(plain["label"] if balance_by is None else list(zip(plain[balance_by], plain["label"])))


def stratum_weights(strata: list) -> list[float]:
    """
    One weight per item that gives every stratum the same total: 1 / (its stratum's size) / (the number of strata).

    Args:
        strata (`list`): each item's stratum (any hashable value, e.g. a `(source, label)` pair).

    Returns:
        `list[float]`: one weight per item, summing to 1.

    Example:

    ```python
    >>> from dualsight_hf.data.split import stratum_weights
    >>> stratum_weights([("a", 0), ("a", 0), ("a", 0), ("b", 1)])
    [0.16666666666666666, 0.16666666666666666, 0.16666666666666666, 0.5]
    ```
    """
    sizes = collections.Counter(strata)
    return [1.0 / sizes[stratum] / len(sizes) for stratum in strata]
