"""Training and evaluation data: sources, object labels, a deterministic split, and the image transforms.

Data flows one way: a source (image folder, CSV/JSON manifest or `datasets` dataset) becomes a `datasets.Dataset`
with the columns `image` (a path or an image), `label` (class name), optionally `objects` and any other columns of the
source (`source`, `generator`, ...); `encode_labels` turns names into ids for a model config; `split_examples` makes a
seeded train/validation/test split; `ImageTransform` reads and augments the images on the fly (`set_transform`).
"""

import hashlib
import io
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from .images import IMAGE_SUFFIXES, ImageLoadError, image_source, load_image
from .loading import first_line

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
    >>> from dualsight_hf.data import load_examples
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
    keys = plain["label"] if balance_by is None else list(zip(plain[balance_by], plain["label"]))
    sizes = {}
    for key in keys:
        sizes[key] = sizes.get(key, 0) + 1
    return [1.0 / sizes[key] / len(sizes) for key in keys]


@dataclass
class AugmentationSettings:
    """
    Training augmentations, each applied with its own probability.

    Args:
        crop_scale (`tuple[float, float]`, defaults to `(0.5, 1.0)`): area range of the random resized crop.
        flip_p (`float`, defaults to 0.5): horizontal flip.
        rotation_degrees (`float`, defaults to 10): maximum rotation, applied with `rotation_p`.
        rotation_p (`float`, defaults to 0.3)
        color_jitter (`float`, defaults to 0.2): brightness/contrast/saturation strength, applied with
            `color_jitter_p`.
        color_jitter_p (`float`, defaults to 0.5)
        jpeg_p (`float`, defaults to 0.3): re-compress as JPEG, quality uniform in `jpeg_quality`.
        jpeg_quality (`tuple[int, int]`, defaults to `(50, 95)`)
        blur_p (`float`, defaults to 0.2): Gaussian blur with sigma uniform in `blur_sigma`.
        blur_sigma (`tuple[float, float]`, defaults to `(0.1, 2.0)`)
        rescale_p (`float`, defaults to 0.2): downscale by a factor in `rescale_factor`, then back up.
        rescale_factor (`tuple[float, float]`, defaults to `(0.25, 0.75)`)
    """

    crop_scale: tuple = (0.5, 1.0)
    flip_p: float = 0.5
    rotation_degrees: float = 10.0
    rotation_p: float = 0.3
    color_jitter: float = 0.2
    color_jitter_p: float = 0.5
    jpeg_p: float = 0.3
    jpeg_quality: tuple = (50, 95)
    blur_p: float = 0.2
    blur_sigma: tuple = (0.1, 2.0)
    rescale_p: float = 0.2
    rescale_factor: tuple = (0.25, 0.75)


def random_resized_crop(image: Image.Image, rng: random.Random, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """A crop of random area fraction and aspect ratio (as torchvision's `RandomResizedCrop` picks it), not resized."""
    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.crop((left, top, left + w, top + h))
    return image


def jpeg_recompress(image: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at `quality` and decode again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def down_up_scale(image: Image.Image, factor: float) -> Image.Image:
    """Downscale by `factor` (bilinear) and scale back to the original size."""
    width, height = image.size
    small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.BILINEAR)
    return small.resize((width, height), Image.BILINEAR)


def augment(image: Image.Image, settings: AugmentationSettings, rng: random.Random) -> Image.Image:
    """Apply the training augmentations of `settings` to one RGB image, drawing from `rng`."""
    image = random_resized_crop(image, rng, settings.crop_scale)
    if rng.random() < settings.flip_p:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < settings.rotation_p:
        image = image.rotate(rng.uniform(-settings.rotation_degrees, settings.rotation_degrees),
                             resample=Image.BILINEAR)
    if rng.random() < settings.color_jitter_p:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(1 + rng.uniform(-settings.color_jitter, settings.color_jitter))
    if rng.random() < settings.blur_p:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*settings.blur_sigma)))
    if rng.random() < settings.rescale_p:
        image = down_up_scale(image, rng.uniform(*settings.rescale_factor))
    if rng.random() < settings.jpeg_p:
        image = jpeg_recompress(image, rng.randint(*settings.jpeg_quality))
    return image


def augment_keeping_traces(image: Image.Image, settings: AugmentationSettings, rng: random.Random) -> Image.Image:
    """
    The training augmentations of the artifact view (see `DualSightConfig.artifact_stream`), drawn from `rng`: the
    flip, and down-up rescaling and JPEG re-compression with the probabilities of `settings`, for every image whatever
    its class, so that neither can become a shortcut. Rotation, blur and colour changes, which only the semantic view
    gets, would resample or smear every pixel; the native-resolution crop is taken afterwards by the processor.
    """
    if rng.random() < settings.flip_p:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < settings.rescale_p:
        image = down_up_scale(image, rng.uniform(*settings.rescale_factor))
    if rng.random() < settings.jpeg_p:
        image = jpeg_recompress(image, rng.randint(*settings.jpeg_quality))
    return image


class ImageTransform:
    """
    On-the-fly batch transform for `datasets.Dataset.set_transform`: reads each image with the one image loader,
    augments it when `augmentation` is given, and runs the model's image processor.

    Unreadable images never reach here in training (see `drop_unreadable`); if one does, it raises `ImageLoadError`.

    Args:
        image_processor (`BaseImageProcessor`): the model's processor (deterministic resize, crop, normalise).
        augmentation ([`AugmentationSettings`], *optional*): training augmentations; `None` for evaluation.
        seed (`int`, *optional*): seed of the augmentation random stream.
    """

    def __init__(self, image_processor, augmentation: AugmentationSettings | None = None, seed: int | None = None):
        self.image_processor = image_processor
        self.augmentation = augmentation
        self.rng = random.Random(seed)

    def __call__(self, batch: dict) -> dict:
        images = [load_image(image_source(item)) for item in batch["image"]]
        artifact_view = {}
        if self.augmentation is not None:
            if "artifact_values" in self.image_processor.model_input_names:
                # the artifact stream's own view: one random native-resolution crop of an image augmented without
                # rotation or blur (see `augment_keeping_traces`)
                artifact_view = {"artifact_images": [augment_keeping_traces(image, self.augmentation, self.rng)
                                                     for image in images], "artifact_rng": self.rng}
            images = [augment(image, self.augmentation, self.rng) for image in images]
        out = dict(self.image_processor(images, return_tensors="pt", **artifact_view))
        for key in ("label", "object_labels"):
            if key in batch:
                out["labels" if key == "label" else key] = batch[key]
        return out


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


def collate(features: list[dict]) -> dict:
    """Stack the transformed examples into a batch for the model."""
    batch = {key: torch.stack([f[key] for f in features]) for key in ("pixel_values", "artifact_values")
             if key in features[0]}
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    if "object_labels" in features[0]:
        values = [f["object_labels"] for f in features]
        dtype = torch.long if not isinstance(values[0], (list, np.ndarray)) else torch.float
        batch["object_labels"] = torch.tensor(values, dtype=dtype)
    return batch
