"""Where training and evaluation examples come from: image folders, CSV/JSON manifests and `datasets`
datasets become one `datasets.Dataset` with the columns `image` (a path or an image), `label` (class name), optionally
`objects` and any other columns of the source (`source`, `generator`, ...); `encode_labels` turns names into ids for a
model config.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path

import datasets

from ..models.images import IMAGE_SUFFIXES, ImageLoadError, image_source, load_image
from ..models.loading import first_line

#: Folder and manifest label spellings that mean the default classes.
LABEL_ALIASES = {
    "fake": "ai_generated", "ai": "ai_generated", "ai-generated": "ai_generated", "generated": "ai_generated",
    "synthetic": "ai_generated", "ai_generated": "ai_generated", "real": "real", "human": "real", "photo": "real",
}


class DataSourceError(ValueError):
    """Examples cannot be read as asked (no such file, a missing column, an unknown label, ...): `str(error)` is one
    line naming the source and the cause."""


def _parse_objects(value):
    """`None` (unknown) or a list of class names, from a JSON list or a `;`-separated string."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith(("[", '"')):  # a JSON list, or one JSON string (a combination label: "cup, person")
        loaded = json.loads(text)
        return [str(v) for v in loaded] if isinstance(loaded, list) else [str(loaded)]
    return [part.strip() for part in text.split(";") if part.strip()]


def read_manifest(path: str) -> datasets.Dataset:
    """
    A CSV or JSON(-lines) manifest with at least `path` and `label` columns; paths are relative to the manifest's
    folder unless absolute. An `objects` column (JSON list or `;`-separated names, empty list = no objects, missing =
    unknown) is kept; so is every other column.
    """
    path = Path(path)
    builder = "csv" if path.suffix.lower() == ".csv" else "json"
    table = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True)
    missing = {"path", "label"} - set(table.column_names)
    if missing:
        raise DataSourceError(f"{path}: manifest lacks the column(s) {', '.join(sorted(missing))}")
    root = path.parent

    def resolve(example):
        image = Path(example["path"])
        return {"image": str(image if image.is_absolute() else root / image), "label": str(example["label"])}

    table = table.map(resolve, keep_in_memory=True)
    if "objects" in table.column_names:
        table = table.map(lambda e: {"objects": json.dumps(_parse_objects(e["objects"]))}, keep_in_memory=True)
    return table


def read_image_folder(root: str) -> datasets.Dataset:
    """An image folder with one sub-folder per class (`real/`, `fake/`, ...), each searched recursively."""
    root = Path(root)
    rows = {"image": [], "label": [], "path": []}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                rows["image"].append(str(file))
                rows["label"].append(class_dir.name)
                rows["path"].append(str(file.relative_to(root)))
    if not rows["image"]:
        raise DataSourceError(f"{root}: no class sub-folders with images found")
    return datasets.Dataset.from_dict(rows)


def read_hub_dataset(name: str, split: str = "train", image_column: str = "image", label_column: str | None = "label",
                     **load_kwargs) -> datasets.Dataset:
    """
    Any `datasets` dataset (Hub id, or a folder saved with `save_to_disk`) with an image column and (for training
    and evaluation) a label column, e.g. `Hemg/AI-Generated-vs-Real-Images-Datasets`. A `ClassLabel` label becomes
    its class names; images stay undecoded until the transform reads them.

    Args:
        name (`str`): Hub id or `save_to_disk` folder.
        split (`str`, *optional*, defaults to `"train"`)
        image_column (`str`, *optional*, defaults to `"image"`): renamed to `image`.
        label_column (`str`, *optional*, defaults to `"label"`): renamed to `label`; `None` for unlabelled data.
        **load_kwargs: passed on to `datasets.load_dataset`.
    """
    if _is_saved_dataset(Path(name)):
        table = datasets.load_from_disk(name)
        table = table[split] if isinstance(table, datasets.DatasetDict) else table
    else:
        table = datasets.load_dataset(name, split=split, **load_kwargs)
    for column in (image_column, label_column):
        if column is not None and column not in table.column_names:
            raise DataSourceError(f"{name}: no column '{column}' (columns: {', '.join(table.column_names)})")
    if label_column is not None:
        labels = table[label_column]
        if isinstance(table.features[label_column], datasets.ClassLabel):
            labels = table.features[label_column].int2str(labels)
        table = table.remove_columns(label_column).add_column("label", [str(label) for label in labels])
    if isinstance(table.features[image_column], datasets.Image):
        table = table.cast_column(image_column, datasets.Image(decode=False))
    return table.rename_column(image_column, "image") if image_column != "image" else table


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("dataset_info.json", "state.json",
                                                                      "dataset_dict.json"))


def as_list(value: str | Sequence[str] | None) -> list[str]:
    """One or several data sources / files as a list (`None` gives an empty list)."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, Path)) else [str(item) for item in value]


def load_examples(data: str | Sequence[str], split: str = "train", image_column: str = "image",
                  label_column: str = "label", objects_file: str | Sequence[str] | None = None) -> datasets.Dataset:
    """
    Read one or several data sources into the common columns (`image`, `label`, optional `objects`, extras).

    Several sources (e.g. the manifests of two data collections) are read one by one, each by the rules of its kind
    (a manifest's paths resolved against its own folder), and concatenated in the order given; a column that only
    some of them have is empty (`None`) in the rows of the others.

    Args:
        data (`str` or `list[str]`): an image folder (one sub-folder per class), a `.csv` / `.json` / `.jsonl`
            manifest, or a `datasets` dataset (Hub id or `save_to_disk` folder); or a list of these.
        split (`str`, *optional*, defaults to `"train"`): split of a `datasets` dataset.
        image_column, label_column (`str`, *optional*): column names of a `datasets` dataset.
        objects_file (`str` or `list[str]`, *optional*): CSV file(s) written by `dualsight pseudo-label`
            (`path,objects`), merged by the `path` column (the manifest's own paths, or paths relative to an image
            folder).

    Returns:
        `datasets.Dataset`

    Example:

    ```python
    >>> from dualsight_hf.data.sources import load_examples
    >>> examples = load_examples(["../shared/data/real-vs-ai/manifest.csv",
    ...                           "../shared/data/photoreal-multi-generator/manifest.csv"])
    >>> len(examples)
    4277
    ```
    """
    sources = as_list(data)
    if not sources:
        raise DataSourceError("no data source given")
    tables = [read_source(source, split, image_column, label_column) for source in sources]
    table = tables[0] if len(tables) == 1 else concatenate_sources(tables, sources)
    objects_files = as_list(objects_file)
    if objects_files:
        table = merge_objects(table, objects_files)
    return table


def read_source(data: str, split: str = "train", image_column: str = "image",
                label_column: str = "label") -> datasets.Dataset:
    """One data source (see `load_examples`), by its kind: image folder, manifest or `datasets` dataset."""
    path = Path(data)
    if path.is_dir() and not _is_saved_dataset(path):
        return read_image_folder(data)
    if path.suffix.lower() in (".csv", ".json", ".jsonl"):
        if not path.is_file():
            raise DataSourceError(f"{data}: no such manifest file")
        return read_manifest(data)
    if not path.exists() and str(data).startswith((".", "/", "~")):
        raise DataSourceError(f"{data}: no such folder")
    try:
        return read_hub_dataset(data, split=split, image_column=image_column, label_column=label_column)
    except (OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise DataSourceError(f"{data}: cannot load the dataset ({first_line(error)})") from error


def concatenate_sources(tables: list[datasets.Dataset], names: list[str]) -> datasets.Dataset:
    """
    Concatenate the tables of several sources (see `load_examples`): a column that a table lacks is added to it
    empty, and a `path` that two sources share is an error, since object labels are merged by path.

    Raises:
        `ValueError`: for a shared path, or for columns whose types differ between the sources.
    """
    seen = {}
    for name, table in zip(names, tables):
        for path in table["path"] if "path" in table.column_names else []:
            if path in seen:
                raise DataSourceError(f"path '{path}' is in both {seen[path]} and {name}: give each source's files "
                                 "distinct relative paths")
            seen[path] = name
    columns = list(dict.fromkeys(column for table in tables for column in table.column_names))
    aligned = []
    for table in tables:
        for column in columns:
            if column not in table.column_names:
                table = table.add_column(column, [None] * len(table))
        aligned.append(table.select_columns(columns))
    try:
        return datasets.concatenate_datasets(aligned)
    except ValueError as error:
        raise DataSourceError(f"cannot combine the data sources {', '.join(names)}: {error}") from None


def merge_objects(table: datasets.Dataset, objects_file: str | Sequence[str]) -> datasets.Dataset:
    """Add (or replace) the `objects` column from `path,objects` CSV file(s); rows they do not list stay unknown."""
    if "path" not in table.column_names:
        raise DataSourceError("merging an objects file needs a 'path' column to match rows by")
    by_path = {}
    for file in as_list(objects_file):
        labels = datasets.load_dataset("csv", data_files=str(file), split="train", keep_in_memory=True)
        by_path.update(zip(labels["path"], labels["objects"]))
    if "objects" in table.column_names:
        table = table.remove_columns("objects")
    objects = [json.dumps(_parse_objects(by_path.get(p))) for p in table["path"]]
    return table.add_column("objects", objects)


def encode_labels(table: datasets.Dataset, config) -> datasets.Dataset:
    """
    Replace class names by ids of `config` (`label`: int; `object_labels`: multi-hot list with `-100` everywhere for
    unknown objects, or a single id / `-100` for a single-label object head).

    Raises:
        `ValueError`: for a label name the config does not know (after `LABEL_ALIASES`).
    """
    label2id = {name.lower(): index for name, index in config.label2id.items()}

    def label_id(name: str) -> int:
        key = name.lower()
        key = key if key in label2id else LABEL_ALIASES.get(key, key)
        if key not in label2id:
            raise DataSourceError(f"label '{name}' is not one of the model's labels {sorted(config.label2id)}")
        return label2id[key]

    ids = {name: label_id(name) for name in set(table["label"])}
    encoded = table.remove_columns("label").add_column("label", [ids[name] for name in table["label"]])
    if "objects" in table.column_names and config.num_object_labels > 0:
        targets = [encode_objects(json.loads(cell), config) for cell in table["objects"]]
        encoded = encoded.add_column("object_labels", targets)
    return encoded


def encode_objects(objects: list[str] | None, config):
    """Object names -> the object head's target (see `encode_labels`); names the head does not know are dropped.
    For a single-label head, a one-element list is taken as the class name itself (a combination label such as
    "cup, person" is one class), a longer list as the parts of a combination."""
    if config.object_problem_type == "single_label_classification":
        if objects is None:
            return -100
        if len(objects) == 1 and objects[0] in config.object_label2id:
            return config.object_label2id[objects[0]]
        name = ", ".join(sorted(objects)) if objects else "Unknown"
        return config.object_label2id.get(name, -100)
    if objects is None:
        return [-100.0] * config.num_object_labels
    target = [0.0] * config.num_object_labels
    for name in objects:
        if name in config.object_label2id:
            target[config.object_label2id[name]] = 1.0
    return target


def drop_unreadable(table: datasets.Dataset, num_proc: int | None = None) -> tuple[datasets.Dataset, list[str]]:
    """
    Remove the examples whose image cannot be read, so that no epoch stops at a broken file.

    Returns:
        `(table, errors)`: the readable examples, and one `ImageLoadError` message per dropped example.
    """
    def check(example):
        try:
            load_image(image_source(example["image"]))
            return {"_error": ""}
        except ImageLoadError as error:
            return {"_error": str(error)}

    checked = table.map(check, num_proc=num_proc, keep_in_memory=True, desc="checking images")
    errors = [e for e in checked["_error"] if e]
    kept = checked.filter(lambda e: not e["_error"], keep_in_memory=True).remove_columns("_error")
    return kept, errors
