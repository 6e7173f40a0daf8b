"""Object pseudo-labels: run a detection, segmentation or classification model over images and keep what it sees.

The original DualSight labelled its objects with a YOLO detector; here any transformers `object-detection`,
`image-segmentation` or `image-classification` pipeline model does the labelling, e.g. the offline PASCAL VOC
DeepLabV3 in `../shared/weights/deeplabv3-mobilenet-v2-voc`, or `hustvl/yolos-tiny` / `facebook/detr-resnet-50` with
Hub access. Results are cached in a JSON-lines file, so a second run over the same images costs nothing.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoConfig, pipeline

from ..models.images import ImageLoadError, load_image

PSEUDO_LABEL_TASKS = ("image-segmentation", "object-detection", "image-classification")
_TASK_BY_ARCHITECTURE_SUFFIX = {
    "SemanticSegmentation": "image-segmentation",
    "UniversalSegmentation": "image-segmentation",
    "InstanceSegmentation": "image-segmentation",
    "PanopticSegmentation": "image-segmentation",
    "ObjectDetection": "object-detection",
    "ImageClassification": "image-classification",
}
IGNORED_LABELS = frozenset({"background", "__background__", "N/A"})


@dataclass(frozen=True)
class PseudoLabelSettings:
    """
    How detections become labels.

    Args:
        score_threshold (`float`, *optional*, defaults to 0.5): keep detections/classes scoring at least this
            (semantic segmentation gives no scores; its area counts instead).
        min_area (`float`, *optional*, defaults to 0.01): keep a segmentation class covering at least this fraction
            of the image.
        combination (`bool`, *optional*, defaults to `False`): return the original DualSight's single label, the
            sorted comma-joined class names ("cup, person"), or `"Unknown"` when nothing is found.
    """

    score_threshold: float = 0.5
    min_area: float = 0.01
    combination: bool = False


def labels_from_predictions(predictions: list[dict], settings: PseudoLabelSettings) -> list[str]:
    """
    Turn one image's pipeline output into a sorted list of distinct class names.

    Args:
        predictions (`list[dict]`): the output of an `image-segmentation` (`label`, `score`, `mask`),
            `object-detection` (`label`, `score`, `box`) or `image-classification` (`label`, `score`) pipeline.
        settings ([`PseudoLabelSettings`]): thresholds.

    Returns:
        `list[str]`: class names present, sorted, background excluded.
    """
    present = set()
    for prediction in predictions:
        if prediction["label"] in IGNORED_LABELS:
            continue
        if "mask" in prediction:
            mask = np.asarray(prediction["mask"]) > 0
            if mask.mean() < settings.min_area:
                continue
        if prediction.get("score") is not None and prediction["score"] < settings.score_threshold:
            continue
        present.add(prediction["label"])
    return sorted(present)


def combination_label(labels: list[str]) -> str:
    """The original DualSight's single-label form: `"cup, person"`, or `"Unknown"` for no object."""
    return ", ".join(sorted(labels)) if labels else "Unknown"


class PseudoLabeler:
    """
    Labels images with the objects a transformers pipeline model finds in them, with a cache.

    Args:
        model (`str`): Hub id or folder of an `image-segmentation`, `object-detection` or `image-classification`
            model.
        settings ([`PseudoLabelSettings`], *optional*): thresholds.
        cache_file (`str` or `Path`, *optional*): JSON-lines cache; entries are keyed by file content, model and
            settings, so changing any of them labels again.
        batch_size (`int`, *optional*, defaults to 4): pipeline batch size.
        dtype (`torch.dtype`, *optional*, defaults to `torch.bfloat16`): inference precision.

    Example:

    ```python
    >>> from dualsight_hf.data.pseudo_label import PseudoLabeler
    >>> labeler = PseudoLabeler("../shared/weights/deeplabv3-mobilenet-v2-voc", cache_file="labels.jsonl")
    >>> labeler.label(["photo.jpg"])  # doctest: +SKIP
    {'photo.jpg': ['dog', 'person']}
    ```
    """

    def __init__(self, model: str, settings: PseudoLabelSettings | None = None, cache_file=None, batch_size: int = 4,
                 dtype: torch.dtype = torch.bfloat16):
        self.model = str(model)
        self.settings = settings or PseudoLabelSettings()
        self.cache_file = Path(cache_file) if cache_file else None
        self.batch_size = batch_size
        self.dtype = dtype
        self._pipeline = None
        self._key_prefix = json.dumps({"model": self.model, **asdict(self.settings)}, sort_keys=True)

    @property
    def task(self) -> str:
        """The pipeline task of the model, read from its architecture's name."""
        architectures = AutoConfig.from_pretrained(self.model).architectures or []
        for architecture in architectures:
            for suffix, task in _TASK_BY_ARCHITECTURE_SUFFIX.items():
                if architecture.endswith(suffix):
                    return task
        raise ValueError(f"{self.model}: architectures {architectures} serve none of {', '.join(PSEUDO_LABEL_TASKS)}")

    def _cache_key(self, data: bytes) -> str:
        return hashlib.sha1(self._key_prefix.encode() + hashlib.sha1(data).digest()).hexdigest()

    def _read_cache(self) -> dict:
        if not self.cache_file or not self.cache_file.exists():
            return {}
        with self.cache_file.open() as handle:
            return {entry["key"]: entry["labels"] for entry in map(json.loads, handle)}

    def label(self, paths, progress: bool = True) -> dict:
        """
        Object labels of each image.

        Args:
            paths (`Iterable[str | Path]`): image files.
            progress (`bool`, *optional*, defaults to `True`): show a progress bar.

        Returns:
            `dict[str, list[str] | str | None]`: per path, the sorted class names (or the combination label when
            `settings.combination`); `None` for a file that cannot be read.
        """
        paths = [str(path) for path in paths]
        cache = self._read_cache()
        keys, todo, results = {}, [], {}
        for path in paths:
            try:
                keys[path] = self._cache_key(Path(path).read_bytes())
            except OSError:
                results[path] = None
                continue
            if keys[path] in cache:
                results[path] = cache[keys[path]]
            else:
                todo.append(path)
        if todo:
            if self._pipeline is None:
                self._pipeline = pipeline(self.task, model=self.model, dtype=self.dtype)
            writer = self.cache_file.open("a") if self.cache_file else None
            try:
                bar = tqdm(total=len(todo), desc="pseudo-labelling", unit="img", disable=not progress)
                for start in range(0, len(todo), self.batch_size):
                    chunk = todo[start : start + self.batch_size]
                    images, readable = [], []
                    for path in chunk:
                        try:
                            images.append(load_image(path))
                            readable.append(path)
                        except ImageLoadError:
                            results[path] = None
                    outputs = self._pipeline(images, batch_size=self.batch_size) if images else []
                    for path, predictions in zip(readable, outputs):
                        labels = labels_from_predictions(predictions, self.settings)
                        results[path] = combination_label(labels) if self.settings.combination else labels
                        if writer:
                            writer.write(json.dumps({"key": keys[path], "path": path, "labels": results[path]}) + "\n")
                    if writer:
                        writer.flush()
                    bar.update(len(chunk))
                bar.close()
            finally:
                if writer:
                    writer.close()
        return {path: results[path] for path in paths}


def label_examples(table, labeler: PseudoLabeler | None, category_map: dict | None = None, category_column: str = "category",
                   min_size: int = 0, progress: bool = True) -> list:
    """
    Object labels for every row of a data table (see `dualsight_hf.data.sources.load_examples`).

    Args:
        table (`datasets.Dataset`): rows with `image` (a path) and, optionally, `category_column`.
        labeler ([`PseudoLabeler`], *optional*): the model that labels the rest; `None` leaves them unknown.
        category_map (`dict[str, list[str]]`, *optional*): rows whose category is a key get these labels instead of
            running the model (e.g. the CIFAR-10 class of a CIFAKE image mapped to VOC names).
        category_column (`str`, *optional*, defaults to `"category"`).
        min_size (`int`, *optional*, defaults to 0): images whose shorter side is below this stay unlabelled
            (`None`): a 32x32 thumbnail blown up to the labeller's input says little.
        progress (`bool`, *optional*, defaults to `True`): show a progress bar.

    Returns:
        `list`: per row, the labels (`list[str]`, or `str` in combination mode) or `None` for unknown.
    """
    category_map = category_map or {}
    categories = table[category_column] if category_column in table.column_names else [None] * len(table)
    results, to_label = [None] * len(table), {}
    for index, (path, category) in enumerate(zip(table["image"], categories)):
        if category in category_map:
            labels = sorted(category_map[category])
            results[index] = combination_label(labels) if labeler and labeler.settings.combination else labels
            continue
        if labeler is None:
            continue
        if min_size:
            try:
                with Image.open(path) as image:
                    if min(image.size) < min_size:
                        continue
            except OSError:
                continue
        to_label[index] = path
    if not to_label:
        return results
    labelled = labeler.label(to_label.values(), progress=progress)
    for index, path in to_label.items():
        results[index] = labelled[path]
    return results


def write_objects_file(path, paths: list[str], labels: list) -> int:
    """
    Write the objects file that `--objects` reads (`path,objects`, the objects as a JSON list) for the images that
    got labels (`None` in `labels`: no label; left out).

    Returns:
        `int`: the number of images written.
    """
    import csv

    written = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "objects"])
        for image_path, objects in zip(paths, labels):
            if objects is not None:
                writer.writerow([image_path, json.dumps(objects)])
                written += 1
    return written
