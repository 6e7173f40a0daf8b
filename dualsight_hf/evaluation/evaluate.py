"""`dualsight evaluate`: how far to trust a model on given data, per group, under degradations, calibrated."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.degradations import degrade
from ..data.sources import as_list, drop_unreadable, encode_labels, load_examples, merge_objects
from ..data.split import SPLIT_RECORD, select_recorded_split, split_examples
from ..models.images import image_source, load_image
from ..models.pipeline import decided_classes, decision_threshold
from .calibration import band_coverage
from .metrics import authenticity_metrics, softmax


@dataclass
class EvaluationData:
    """
    Which examples to evaluate on.

    Args:
        data (`str` or `list[str]`): image folder, manifest or `datasets` dataset, or several (as in training).
        split (`str`, *optional*, defaults to `"test"`): `train`, `validation` or `test` of the seeded split that
            training makes with the same settings, or `all`.
        validation_size, test_size (`float`), split_seed (`int`), stratify_by (`str`), holdout_column,
            holdout_value (`str`): the split settings, as in training (those of `recipes/mobile_model.yaml` by
            default); with a held-out group, `test` is that group.
        dataset_split, image_column, label_column (`str`): for `datasets` sources.
        objects_file (`str` or `list[str]`, *optional*): `path,objects` CSV file(s) of object labels to merge in
            (as training's `--objects_file`), so that the rows carry `object_labels` for the object head.
        split_record (`str`, *optional*): a run's `split.json` (see `split.write_split_record`): the split is read
            from it instead of recomputed from the settings; `root` is the folder its paths are relative to.
    """

    data: str | list[str]
    split: str = "test"
    validation_size: float = 0.15
    test_size: float = 0.15
    split_seed: int = 42
    stratify_by: str | None = "source"
    holdout_column: str | None = None
    holdout_value: str | None = None
    dataset_split: str = "train"
    image_column: str = "image"
    label_column: str = "label"
    objects_file: str | list[str] | None = None
    split_record: str | None = None
    root: str = "."

    #: the split settings that a model's training run records (`all_results.json`, `recipe.data`)
    SPLIT_SETTINGS = ("validation_size", "test_size", "split_seed", "stratify_by", "holdout_column", "holdout_value")

    @classmethod
    def of_model(cls, model_dir, split: str = "test", data=None, root=".", **overrides) -> "EvaluationData":
        """
        The examples a trained model's own run used: its data sources and split settings as its `all_results.json`
        records them, and the split itself as its `split.json` records it (so that `test` is exactly the split its
        training never saw), or this class's defaults where the folder has no record. The split is recomputed from
        the settings where there is no `split.json`, where `overrides` change the settings, or where `data` names
        other sources than the recorded ones.

        Args:
            model_dir (`str` or `Path`): the model folder.
            split (`str`, *optional*, defaults to `"test"`)
            data (`str` or `list[str]`, *optional*): other data instead of the recorded sources.
            root (`str` or `Path`, *optional*, defaults to `"."`): the folder the recorded relative paths start from
                (the training run's working directory: the repository root for the default model).
            **overrides: split settings that replace the recorded ones (`None` values are ignored).

        Example:

        ```python
        >>> from dualsight_hf import MOBILE_MODEL_DIR
        >>> from dualsight_hf.evaluation.evaluate import EvaluationData
        >>> EvaluationData.of_model(MOBILE_MODEL_DIR, "validation").split
        'validation'
        ```
        """
        results = Path(model_dir) / "all_results.json"
        recipe = json.loads(results.read_text()).get("recipe", {}).get("data", {}) if results.exists() else {}
        settings = {key: recipe[key] for key in cls.SPLIT_SETTINGS if key in recipe}
        settings.update({key: value for key, value in overrides.items() if value is not None})
        recorded = [str(Path(root) / source) for source in as_list(recipe.get("data"))]
        if data is None:
            if not recorded:
                raise ValueError(f"{model_dir}: no training record (all_results.json) names its data; give the data")
            data = recorded
        objects = [str(Path(root) / file) for file in as_list(recipe.get("objects_file"))] or None
        record = Path(model_dir) / SPLIT_RECORD
        same_data = {Path(source).resolve() for source in as_list(data)} == {Path(s).resolve() for s in recorded}
        same_settings = all(value is None or value == recipe.get(key) for key, value in overrides.items())
        use_record = record.exists() and same_data and same_settings
        return cls(data, split, **settings, objects_file=objects, split_record=str(record) if use_record else None,
                   root=str(root))

    def matches_record(self) -> bool:
        """Whether this selection's split settings are those its `split_record` was made with (a copy with other
        settings, e.g. `dataclasses.replace(data, holdout_value=...)`, recomputes its split instead)."""
        recorded = json.loads(Path(self.split_record).read_text())["settings"]
        return all(getattr(self, key) == recorded.get(key) for key in self.SPLIT_SETTINGS)

    def load(self, config):
        """The chosen examples, readable ones only, labels encoded for `config`."""
        table, _ = drop_unreadable(load_examples(self.data, self.dataset_split, self.image_column, self.label_column))
        if self.objects_file:
            table = merge_objects(table, self.objects_file)
        table = encode_labels(table, config)
        if self.split == "all":
            return table
        if self.split_record and self.matches_record():
            return select_recorded_split(table, self.split_record, self.split, self.root)
        stratify = self.stratify_by if self.stratify_by in table.column_names else None
        return split_examples(table, self.validation_size, self.test_size, self.split_seed, stratify,
                              self.holdout_column, self.holdout_value)[self.split]


def collect_logits(predictor, examples, condition: tuple[str, float] | None = None, progress: bool = True,
                   description: str = "evaluating", by_label: dict | None = None, bar=None) -> np.ndarray:
    """
    Authenticity logits of every example ([`Predictor.logits`], the loop `predict` runs), after applying
    `condition` (`(name, level)`) to each image, or with `by_label`, the degradations listed for the example's label
    (`{label id: [(name, level), ...]}`), in order. A `bar` (a `tqdm` shared by several passes) is advanced per image
    instead of a bar of this pass's own.
    """
    images = examples.with_format(None)["image"]
    labels = examples.with_format(None)["label"] if by_label else None

    def degraded():
        for index, source in enumerate(images):
            image = load_image(image_source(source))
            for name, level in ([condition] if condition else []) + (by_label.get(labels[index], []) if by_label
                                                                      else []):
                image = degrade(image, name, level, seed=index)
            yield image

    own_bar = bar is None
    bar = tqdm(total=len(images), desc=description, unit="img", disable=not progress, leave=False) if own_bar else bar
    try:
        return predictor.logits(degraded(), bar=bar)
    finally:
        if own_bar:
            bar.close()


def _decision_accuracy(probabilities: np.ndarray, labels: np.ndarray, config) -> float:
    return float((decided_classes(probabilities, config) == labels).mean())


#: The two treatments that the shortcut check swaps between the classes: a smaller, more compressed copy, and a
#: lightly re-compressed one at the native size.
SHORTCUT_TREATMENTS = {"small, JPEG 60": [("resize", 0.5), ("jpeg", 60)], "native size, JPEG 95": [("jpeg", 95)]}


def shortcut_arrangements() -> dict:
    """The two arrangements of the shortcut check: name -> the treatments of each class (`{label id: [...]}`)."""
    (small, small_steps), (native, native_steps) = SHORTCUT_TREATMENTS.items()
    return {f"real {small} / AI {native}": {0: small_steps, 1: native_steps},
            f"real {native} / AI {small}": {0: native_steps, 1: small_steps}}


def shortcut_check(predictor, examples, progress: bool = True, logits: dict | None = None) -> dict:
    """
    Does the model key on image size or JPEG quality? Two-class models only. The examples are scored twice: once
    with the real images made smaller and more compressed than the AI-generated ones (`SHORTCUT_TREATMENTS`), once
    with the treatments swapped. A model that reads the image itself scores both alike; one that keys on size or
    compression gains in one arrangement what it loses in the other.

    Args:
        predictor ([`Predictor`]), examples (`datasets.Dataset`): the model and the labelled examples.
        progress (`bool`, *optional*, defaults to `True`): progress bars.
        logits (`dict`, *optional*): the raw logits of each arrangement (`shortcut_arrangements`), when already
            scored (as `evaluate` does); else they are scored here.

    Returns:
        `dict`: per arrangement the AUROC and the accuracy at the model's threshold, and `auroc_gap` and
        `accuracy_gap`, the absolute differences between the two arrangements.
    """
    config = predictor.model.config
    labels = np.asarray(examples.with_format(None)["label"])
    result = {}
    for name, by_label in shortcut_arrangements().items():
        raw = logits[name] if logits else collect_logits(predictor, examples, progress=progress, description=name,
                                                         by_label=by_label)
        calibrated = raw / config.temperature
        result[name] = {"auroc": authenticity_metrics(calibrated, labels)["auroc"],
                        "accuracy_at_threshold": _decision_accuracy(softmax(calibrated), labels, config)}
    first, second = (result[name] for name in list(result))
    return {"arrangements": result, "auroc_gap": abs(first["auroc"] - second["auroc"]),
            "accuracy_gap": abs(first["accuracy_at_threshold"] - second["accuracy_at_threshold"])}


#: `dualsight evaluate --quick`: the clean pass and one level each of the commonest degradations, no shortcut check
QUICK_PERTURBATIONS = [("jpeg", 75.0), ("downscale", 0.5), ("blur", 1.0)]


def evaluation_passes(perturbations: list[tuple[str, float]], check_shortcuts: bool) -> dict:
    """Every pass over the examples that an evaluation makes, in order: name -> `(condition, by_label)`."""
    passes = {"clean": (None, None)}
    passes.update({f"{name} {level:g}": ((name, level), None) for name, level in perturbations})
    if check_shortcuts:
        passes.update({name: (None, by_label) for name, by_label in shortcut_arrangements().items()})
    return passes


def evaluate(predictor, examples, perturbations: list[tuple[str, float]], group_by: str | None = None,
             progress: bool = True, check_shortcuts: bool = False, passes_dir=None) -> dict:
    """
    Metrics of the authenticity head on `examples`, clean and under each degradation.

    One progress bar covers every pass (clean, each degradation, the two shortcut arrangements) with its estimate of
    the time left; after the first batch the expected duration of the whole evaluation is printed.

    Args:
        predictor ([`Predictor`]): the model (its config's temperature, threshold and band are used).
        examples (`datasets.Dataset`): rows with `image` and an encoded `label`.
        perturbations (`list[tuple[str, float]]`): `(name, level)` pairs, see `degradations.parse_perturbation`.
        group_by (`str`, *optional*): column to break the clean metrics down by (e.g. `source`).
        progress (`bool`, *optional*, defaults to `True`): progress bar and duration estimate.
        check_shortcuts (`bool`, *optional*, defaults to `False`): also run [`shortcut_check`] (two-class models).
        passes_dir (`str` or `Path`, *optional*): a folder where each finished pass's logits are written at once
            (`<pass>.npy`); a pass whose file is there is read instead of scored again, so an interrupted evaluation
            resumes where it stopped. The caller makes sure the folder belongs to the same model and examples
            (see `dualsight evaluate --resume`).

    Returns:
        `dict` with `clean` (raw and calibrated metrics, per group), `degradations` (accuracy at the model's
        threshold and AUROC per condition), `uncertain_band` (coverage and accuracy), `settings`, and with
        `check_shortcuts`, `shortcut_check`.
    """
    config = predictor.model.config
    labels = np.asarray(examples.with_format(None)["label"])
    threshold = decision_threshold(config)
    passes = evaluation_passes(perturbations, check_shortcuts and config.num_labels == 2)
    logits = score_passes(predictor, examples, passes, passes_dir, progress)
    calibrated = logits["clean"] / config.temperature
    clean = {"raw": authenticity_metrics(logits["clean"], labels),
             "calibrated": authenticity_metrics(calibrated, labels)}
    clean["calibrated"]["accuracy_at_threshold"] = _decision_accuracy(softmax(calibrated), labels, config)
    if group_by and group_by in examples.column_names:
        groups = np.asarray(examples.with_format(None)[group_by])
        clean["by_" + group_by] = {
            str(g): {**authenticity_metrics(calibrated[groups == g], labels[groups == g]),
                     "accuracy_at_threshold": _decision_accuracy(softmax(calibrated[groups == g]),
                                                                 labels[groups == g], config)}
            for g in sorted(set(groups))
        }
    degradations = []
    for name, level in perturbations:
        degraded = logits[f"{name} {level:g}"] / config.temperature
        metrics = authenticity_metrics(degraded, labels)
        degradations.append({"degradation": name, "level": level, "auroc": metrics["auroc"],
                             "accuracy_at_threshold": _decision_accuracy(softmax(degraded), labels, config),
                             "ece": metrics["ece"]})
    result = {"clean": clean, "degradations": degradations,
              "settings": {"temperature": config.temperature, "decision_threshold": threshold,
                           "uncertain_band": config.uncertain_band, "count": int(len(labels))}}
    if config.num_labels == 2:
        positive = softmax(calibrated)[:, 1]
        result["uncertain_band"] = [band_coverage(positive, labels, threshold, band)
                                    for band in sorted({0.0, 0.05, 0.1, 0.2, config.uncertain_band})]
        if check_shortcuts:
            result["shortcut_check"] = shortcut_check(predictor, examples, progress, logits=logits)
        result["raw_logits"] = logits["clean"].tolist()
        result["labels"] = labels.tolist()
    return result


def passes_folder(folder, model: str, data: list[str], split: str, examples, resume: bool = False) -> Path:
    """
    The folder where `dualsight evaluate` keeps each finished pass ([`score_passes`]), with a record of the run it
    belongs to (`run.json`: model, data, split and images): emptied for a new run, kept for `resume` when the record
    matches.

    Raises:
        `ValueError`: `resume` and the folder holds the passes of another model, data or split.
    """
    folder = Path(folder)
    run = {"model": str(Path(model).resolve()), "data": [str(Path(item).resolve()) for item in data],
           "split": split, "images": [str(image) for image in examples.with_format(None)["image"]]}
    recorded = folder / "run.json"
    if resume and recorded.exists() and json.loads(recorded.read_text()) != run:
        raise ValueError(f"{folder} holds passes of another model, data or split; run without --resume to start "
                         "again")
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(run))
    return folder


def score_passes(predictor, examples, passes: dict, passes_dir=None, progress: bool = True) -> dict:
    """The raw logits of every pass of `evaluation_passes`, under one progress bar (see `evaluate`)."""
    count = len(examples)
    folder = Path(passes_dir) if passes_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / (name.replace(" ", "_").replace("/", "-").replace(",", "") + ".npy") if folder else None
             for name in passes}
    logits, todo = {}, []
    for name in passes:
        if files[name] is not None and files[name].exists():
            logits[name] = np.load(files[name])
        else:
            todo.append(name)
    if progress and len(todo) < len(passes):
        tqdm.write(f"resuming: {len(passes) - len(todo)} of {len(passes)} passes already scored")
    with EstimatingBar(total=len(todo) * count, unit="img", disable=not progress,
                       what=f"{len(todo)} passes over {count} images") as bar:
        for number, name in enumerate(todo, start=1):
            bar.set_description(f"pass {number}/{len(todo)}: {name}")
            condition, by_label = passes[name]
            logits[name] = collect_logits(predictor, examples, condition, by_label=by_label, bar=bar)
            if files[name] is not None:
                np.save(files[name], logits[name])
    return logits


class EstimatingBar(tqdm):
    """A progress bar that, after its first update (one batch), prints once how long the whole run should take."""

    def __init__(self, *args, what: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.what, self.estimated = what, False

    def update(self, n=1):
        super().update(n)
        elapsed = self._time() - self.start_t if hasattr(self, "start_t") else 0.0
        if not self.estimated and not self.disable and self.n and elapsed > 0:
            self.estimated = True
            self.write(f"{self.what}: about {elapsed / self.n * self.total / 60:.1f} minutes in all")


def default_device_predictor(model: str | None, batch_size: int = 32):
    """A `Predictor` for evaluation (bfloat16 where fast, no worker processes, pixels only: provenance metadata
    never reaches an accuracy figure)."""
    from ..inference.predictor import Predictor

    return Predictor(model, batch_size=batch_size, num_workers=0, evidence="pixels",
                     device="cuda" if torch.cuda.is_available() else "cpu")
