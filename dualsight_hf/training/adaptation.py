"""
Few-shot adaptation: teach a DualSight model a new generator from a few dozen of its images, on a CPU, without
forgetting what it knew.

A small part of the model is fine-tuned with `Trainer` (the authenticity head, optionally the artifact stream or the
last backbone stage; everything else stays frozen, normalisation statistics included) on the user's images mixed
with a replay sample of earlier training data. When only the head trains, nothing before it changes and adaptation
does not augment, so the head's inputs are computed once and every epoch trains on them (the same steps, without
running the backbone again). Part of the user's images is held back to measure the model before and
after; the false-positive rate on replayed real photos (a separate sample from the one trained on) is measured too,
and a rise above a margin is reported as a warning.
"""

import json
import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from torch import nn
from transformers import TrainingArguments

from ..data.augmentation import ImageTransform, collate
from ..data.sources import encode_labels, load_examples, read_manifest
from ..evaluation.evaluate import collect_logits
from ..evaluation.metrics import authenticity_metrics
from ..machine import describe_machine, machine_line
from ..models.images import ImageLoadError, iter_image_files
from ..models.loading import load_image_processor
from ..models.pipeline import authenticity_probabilities, decided_classes
from .linear_heads import (
    authenticity_weights,
    fit_logistic_near,
    has_linear_authenticity_head,
    set_authenticity_weights,
)
from .trainer import DualSightTrainer

logger = logging.getLogger(__name__)

#: What `--train` can fine-tune: the authenticity head alone, with the artifact stream, or with the last backbone stage.
PARTS = ("head", "head+artifacts", "head+last-stage", "refit")
#: `refit`'s regularisation where the base model's record names none (the default model records its own)
REFIT_C = 0.01
REAL_LABEL = "real"


class AdaptationError(ValueError):
    """The adaptation cannot run as asked; `str(error)` is one line saying why and what to do."""


@dataclass
class AdaptationReport:
    """
    What an adaptation did and measured (written as `adaptation.json` and into the card).

    Args:
        base_model (`str`): the model adapted.
        part (`str`): what was trained (see `PARTS`).
        shots (`dict`): training images per class from the user.
        held_back (`dict`): the user's images per class kept for the before/after check.
        replay (`int`): replayed images trained on; `replay_check` real photos from the replay data kept apart for
            the false-positive check.
        before, after (`dict`): accuracy, balanced accuracy and AUROC on the held-back images.
        false_positive_rate (`dict`): on the replay check's real photos, `before` and `after`.
        warnings (`list[str]`): what the user should look at.
        seconds (`float`): wall time of the fine-tuning.
        sources (`dict`): the `fake` and `real` sources given.
    """

    base_model: str
    part: str
    shots: dict
    held_back: dict
    replay: int
    replay_check: int
    before: dict
    after: dict
    false_positive_rate: dict
    seconds: float
    sources: dict
    warnings: list = field(default_factory=list)
    machine: str = ""


def image_paths(source: str) -> list[str]:
    """The image files of a folder (walked recursively), the `path` column of a manifest (CSV), or one image file."""
    path = Path(source)
    if path.is_dir():
        return [str(entry) for entry in iter_image_files([path]) if not isinstance(entry, ImageLoadError)]
    if path.is_file() and path.suffix.lower() == ".csv":
        return [str(image) for image in read_manifest(str(path))["image"]]
    if path.is_file():
        return [str(path)]
    raise AdaptationError(f"{source}: no such folder, manifest (.csv) or image file")


def recorded_replay(model_dir: str, root: str = ".") -> datasets.Dataset | None:
    """The train split of the model's own training run (its recorded sources and split), where it can be read from
    `root`; `None` otherwise. Only the train split: the run's test images stay unseen."""
    from ..evaluation.evaluate import EvaluationData
    from ..models.loading import load_model

    try:
        data = EvaluationData.of_model(model_dir, "train", root=root)
        return data.load(load_model(model_dir).config)
    except (ValueError, OSError) as error:
        logger.warning("no replay data from the model's training record (%s)", error)
        return None


def ai_label(config) -> str:
    """The model's AI-generated class: the other class of a two-class model with a `real` class."""
    labels = list(config.label2id)
    if len(labels) != 2 or REAL_LABEL not in labels:
        raise AdaptationError(f"adaptation needs a two-class model with a '{REAL_LABEL}' class; this one has "
                              f"{', '.join(labels)}")
    return next(label for label in labels if label != REAL_LABEL)


def user_examples(fake: list[str], real: list[str], config, min_per_class: int) -> datasets.Dataset:
    """The user's images as a labelled table; refuses too few per class."""
    fake_paths = [p for source in fake for p in image_paths(source)]
    real_paths = [p for source in real for p in image_paths(source)]
    for name, paths in (("--fake", fake_paths), ("--real", real_paths)):
        if len(paths) < min_per_class:
            raise AdaptationError(f"{name} holds {len(paths)} images; adaptation needs at least {min_per_class} per "
                                  "class (a part is held back to measure the result)")
    labels = [ai_label(config)] * len(fake_paths) + [REAL_LABEL] * len(real_paths)
    table = datasets.Dataset.from_dict({"image": fake_paths + real_paths, "label": labels,
                                        "source": ["user"] * len(labels)})
    return encode_labels(table, config)


def stratified_split(table: datasets.Dataset, held_back: float, shots: int | None, seed: int):
    """`(train, held_back)`: per class, a `held_back` fraction (at least 2 images) is kept apart; at most `shots`
    of the rest are trained on."""
    rng = random.Random(seed)
    train, kept = [], []
    labels = table["label"]
    for label in sorted(set(labels)):
        rows = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(rows)
        count = max(2, round(len(rows) * held_back))
        kept += rows[:count]
        train += rows[count:][:shots] if shots else rows[count:]
    return table.select(sorted(train)), table.select(sorted(kept))


def replay_examples(replay, config, size: int, check_size: int, seed: int):
    """`(train, check)`: `size` replayed examples to train on, and `check_size` real photos apart from them.
    `replay` is a list of sources (manifests, folders) or a table with encoded labels."""
    if replay is None or len(replay) == 0 or size + check_size == 0:
        return None, None
    table = replay if isinstance(replay, datasets.Dataset) else encode_labels(load_examples(replay), config)
    table = table.shuffle(seed=seed)
    real_id = config.label2id[REAL_LABEL]
    real_rows = [i for i, label in enumerate(table["label"]) if label == real_id]
    check_rows = set(real_rows[:check_size])
    train_rows = [i for i in range(len(table)) if i not in check_rows][:size]
    keep = ["image", "label"]
    return (table.select(train_rows).select_columns(keep),
            table.select(sorted(check_rows)).select_columns(keep) if check_rows else None)


def measure(model_dir: str, held_back: datasets.Dataset, check: datasets.Dataset | None) -> tuple[dict, float | None]:
    """Accuracy, balanced accuracy and AUROC on the held-back images, and the false-positive rate (the model's own
    decision rule: calibrated probability against its threshold) on the check's real photos; one model load."""
    from ..inference.predictor import Predictor

    predictor = Predictor(model_dir, batch_size=16, num_workers=0, evidence="pixels", dtype="float32")
    config = predictor.model.config
    ai_id = config.label2id[ai_label(config)]
    metrics = authenticity_metrics(collect_logits(predictor, held_back, progress=False),
                                   np.array(held_back["label"]), positive_label=ai_id)
    figures = {name: metrics[name] for name in ("accuracy", "balanced_accuracy", "auroc")}
    if check is None or not len(check):
        return figures, None
    decided = decided_classes(np.stack([authenticity_probabilities(row, config)
                                        for row in collect_logits(predictor, check, progress=False)]), config)
    return figures, float(np.mean(decided == ai_id))


def trainable_model(model_dir: str, part: str):
    """The model with only `part` trainable (frozen batch norms keep their statistics, see `train()`)."""
    from ..models.loading import load_model

    if part not in PARTS:
        raise AdaptationError(f"--train must be one of {', '.join(PARTS)}, not {part!r}")
    model = load_model(model_dir)
    model.config.freeze_backbone = True
    model.config.unfrozen_backbone_stages = 1 if part == "head+last-stage" else 0
    model.apply_freezing()
    for name, parameter in model.named_parameters():
        if not name.startswith(("dualsight.backbone.", "dualsight.extra_backbones.")):
            parameter.requires_grad_(name.startswith("classifier.") or (
                part == "head+artifacts" and name.startswith("dualsight.artifact_encoder.")))
    return model


class HeadOnCachedInputs(nn.Module):
    """
    The authenticity head of `model` on inputs computed once ([`head_inputs`]): `Trainer` trains it as it would
    train the whole model with everything before the head frozen.

    Args:
        model ([`DualSightForImageClassification`]): the model whose `classifier` trains (in place).

    Example:

    ```python
    >>> from dualsight_hf.training.adaptation import HeadOnCachedInputs, head_inputs, trainable_model
    >>> model = trainable_model("dualsight_hf/mobile_model", "head")  # doctest: +SKIP
    >>> rows = head_inputs(model, table, processor)  # doctest: +SKIP
    >>> Trainer(model=HeadOnCachedInputs(model), train_dataset=rows, ...).train()  # doctest: +SKIP
    ```
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, head_inputs: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.model.authenticity_logits_from_inputs(self.model.dropout(head_inputs))
        loss = self.model._authenticity_loss(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def head_inputs(model, table: datasets.Dataset, processor, batch_size: int = 16) -> list[dict]:
    """`[{"head_inputs": (crops, features), "labels": label}, ...]` for every row of `table` (`image`, `label`):
    the authenticity head's inputs, as the model computes them with everything before the head frozen (frozen
    normalisation layers keep their statistics, no augmentation). They are computed without dropout;
    [`HeadOnCachedInputs`] applies `classifier_dropout` (0 by default) to them at every step."""
    transform = ImageTransform(processor)
    stream = model.config.artifact_stream
    rows = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(table), batch_size):
            batch = transform(table[start:start + batch_size])
            semantic = None
            if not stream or stream["semantic_features"]:
                semantic = model.dualsight(batch["pixel_values"]).pooler_output
            inputs = model.authenticity_head_inputs(semantic, batch.get("artifact_values"))
            rows += [{"head_inputs": row, "labels": torch.tensor(label)} for row, label in zip(inputs, batch["labels"])]
    return rows


def _train_with_trainer(base, part: str, mixed: datasets.Dataset, weights: list, processor, epochs: int,
                        learning_rate: float, seed: int, progress: bool) -> None:
    """Fine-tune `part` of `base` in place with `Trainer`, drawing `mixed`'s rows by `weights`."""
    if part == "head":  # nothing before the head changes: its inputs once, then the epochs on them
        trained, train_dataset, data_collator = HeadOnCachedInputs(base), head_inputs(base, mixed, processor), None
    else:
        mixed.set_transform(ImageTransform(processor))
        trained, train_dataset, data_collator = base, mixed, collate
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(output_dir=scratch, num_train_epochs=epochs, learning_rate=learning_rate,
                                      per_device_train_batch_size=16, save_strategy="no", report_to=[],
                                      logging_strategy="no", seed=seed, remove_unused_columns=False,
                                      dataloader_pin_memory=False, disable_tqdm=not progress,
                                      label_names=["labels"], use_cpu=not torch.cuda.is_available())
        trainer = DualSightTrainer(model=trained, args=arguments, train_dataset=train_dataset,
                                   data_collator=data_collator, sample_weights=weights)
        trainer.train()


def refit_strength(model_dir: str) -> float:
    """The regularisation `refit` uses: the C the base model's own head was fitted with (its record's
    `recipe.authenticity_head.C`), else `REFIT_C`."""
    record = Path(model_dir) / "all_results.json"
    recipe = json.loads(record.read_text()).get("recipe", {}) if record.exists() else {}
    return float((recipe.get("authenticity_head") or {}).get("C") or REFIT_C)


def refit_linear_head(model, rows: list[dict], weights: list, c: float) -> None:
    """
    Refit `model`'s linear authenticity head on its cached inputs (see [`head_inputs`]) by logistic regression
    regularised towards the head it has (`linear_heads.fit_logistic_near`), each row weighted as `weights` say (the
    user's images and the replay half and half), with strength `c`. Regularised towards zero instead, a refit on the
    few hundred rows of an adaptation forgot other families (in the CLIP probe's features, held-out StyleGAN2 at 8
    shots: the largest AUROC drop elsewhere 0.48, against 0.01 towards the start).

    Args:
        model ([`DualSightForImageClassification`]): a model with a two-class linear head (changed in place).
        rows (`list[dict]`): `head_inputs` and `labels` per row.
        weights (`list[float]`): a weight per row.
        c (`float`): inverse regularisation strength on standardised inputs.
    """
    # the head scores every crop and averages the logits: the logit of the crops' mean input, for a linear head
    features = torch.stack([row["head_inputs"].mean(dim=0) for row in rows]).double().numpy()
    labels = np.array([int(row["labels"]) for row in rows])
    start_weight, start_bias = authenticity_weights(model)
    weight, bias = fit_logistic_near(features, labels, c, start_weight, start_bias, sample_weight=np.asarray(weights))
    set_authenticity_weights(model, weight, bias)


def adapt(model: str, fake: list[str], real: list[str], out: str, shots: int | None = 32,
          replay=None, replay_size: int | None = None, replay_check_size: int = 64,
          part: str = "head", epochs: int = 10, learning_rate: float = 3e-4, held_back: float = 0.25,
          min_per_class: int = 8, fpr_margin: float = 0.02, seed: int = 0, progress: bool = True) -> AdaptationReport:
    """
    Fine-tune a part of `model` on a new generator's images, and save an ordinary DualSight folder to `out`.

    Args:
        model (`str`): the model folder to adapt.
        fake, real (`list[str]`): folders or manifests of the new generator's images and of real photos.
        out (`str`): the adapted model's folder (loads with `from_pretrained`, the pipeline and remote code).
        shots (`int`, *optional*, defaults to 32): at most this many training images per class (`None`: all
            that are not held back).
        replay (`list[str]` or `datasets.Dataset`, *optional*): earlier training data (manifests, folders, or a
            table with encoded labels such as `recorded_replay` gives); a sample is mixed in so that earlier families
            are not forgotten, and real photos apart from it check the false-positive rate.
        replay_size (`int`, *optional*): replayed training images; defaults to four times the user's training
            images.
        replay_check_size (`int`, *optional*, defaults to 64): real photos from `replay` for the false-positive check.
        part (`str`, *optional*, defaults to `"head"`): what is trained, one of `PARTS`: `"head"`, `"head+artifacts"`
            or `"head+last-stage"` with `Trainer`, or `"refit"`: a linear head refitted by logistic regression
            regularised towards the base head (strength: the base's recorded C, see [`refit_strength`]; `epochs`
            and `learning_rate` unused), for models with frozen features and a linear head such as the default
            model.
        epochs (`int`, *optional*, defaults to 10), learning_rate (`float`, *optional*, defaults to 3e-4): in trials on a
            held-out family, 1e-3 moved the decisions on replayed real photos far more than the new family gained
        held_back (`float`, *optional*, defaults to 0.25): fraction of the user's images per class kept apart for
            the before/after check.
        min_per_class (`int`, *optional*, defaults to 8): fewer images in a class is refused.
        fpr_margin (`float`, *optional*, defaults to 0.02): warn when the false-positive rate on the replayed real
            photos rises by more than this.
        seed (`int`, *optional*, defaults to 0)
        progress (`bool`, *optional*, defaults to `True`): `Trainer`'s progress bar.

    Returns:
        [`AdaptationReport`], also written to `out/adaptation.json` and the card.

    Example:

    ```python
    >>> from dualsight_hf.training.adaptation import adapt
    >>> report = adapt("dualsight_hf/mobile_model", ["new-generator/"], ["my-photos/"], "adapted/")  # doctest: +SKIP
    >>> report.before["auroc"], report.after["auroc"]  # doctest: +SKIP
    ```
    """
    base = trainable_model(model, part)
    stream = base.config.artifact_stream
    averaged = not stream or stream["crop_aggregation"] == "mean"
    if part == "refit" and not (has_linear_authenticity_head(base) and averaged):
        raise AdaptationError(f"{model}: --train refit needs a two-class linear authenticity head whose crops' logits "
                              "are averaged (as the default model has); this model's is not one, use --train head")
    examples = user_examples(fake, real, base.config, min_per_class)
    train, kept = stratified_split(examples, held_back, shots, seed)
    replay_size = 4 * len(train) if replay_size is None else replay_size
    replayed, check = replay_examples(replay or [], base.config, replay_size, replay_check_size, seed)
    warnings = [] if replayed is not None else ["no replay data (--replay): earlier families may be forgotten"]
    before, fpr_before = measure(model, kept, check)

    mixed = datasets.concatenate_datasets([train.select_columns(["image", "label"])] +
                                          ([replayed] if replayed is not None else []))
    # half of every epoch's draws are the user's images, half the replay, whatever their counts
    weights = [0.5 / len(train)] * len(train) + ([0.5 / len(replayed)] * len(replayed) if replayed is not None else [])
    processor = load_image_processor(model)
    started = time.perf_counter()
    if part == "refit":  # a linear head on frozen features: logistic regression on its inputs, in closed form
        refit_linear_head(base, head_inputs(base, mixed, processor), weights, refit_strength(model))
    else:
        _train_with_trainer(base, part, mixed, weights, processor, epochs, learning_rate, seed, progress)
    seconds = time.perf_counter() - started
    base.config.freeze_backbone = False  # the saved model is an ordinary model: nothing frozen when fine-tuned again
    base.config.unfrozen_backbone_stages = 0
    base.save_pretrained(out)
    processor.save_pretrained(out)
    after, fpr_after = measure(out, kept, check)
    if fpr_before is not None and fpr_after is not None and fpr_after > fpr_before + fpr_margin:
        warnings.append(f"false-positive rate on replayed real photos rose from {fpr_before:.3f} to {fpr_after:.3f} "
                        f"(margin {fpr_margin}): check the adapted model on your real photos before using it")
    ai = ai_label(base.config)
    report = AdaptationReport(
        base_model=str(model), part=part, shots=_per_class(train, base.config), held_back=_per_class(kept, base.config),
        replay=len(replayed) if replayed is not None else 0, replay_check=len(check) if check is not None else 0,
        before=before, after=after, false_positive_rate={"before": fpr_before, "after": fpr_after},
        seconds=seconds, sources={ai: list(fake), REAL_LABEL: list(real),
                                  "replay": ["the model's training split"] if isinstance(replay, datasets.Dataset)
                                  else list(replay or [])},
        warnings=warnings, machine=machine_line(describe_machine()))
    (Path(out) / "adaptation.json").write_text(json.dumps(asdict(report), indent=2))
    write_card(Path(out), report)
    for message in warnings:
        logger.warning(message)
    return report


def _per_class(table: datasets.Dataset, config) -> dict:
    labels = table["label"]
    return {config.id2label[label]: labels.count(label) for label in sorted(set(labels))}


def card_section(report: AdaptationReport) -> str:
    """The card's adaptation section: what it was adapted on, and the before/after figures."""
    rows = [f"| {name.replace('_', ' ')} | {report.before[name]:.3f} | {report.after[name]:.3f} |"
            for name in ("accuracy", "balanced_accuracy", "auroc")]
    fpr = report.false_positive_rate
    if fpr["before"] is not None:
        rows.append(f"| false-positive rate on {report.replay_check} replayed real photos | {fpr['before']:.3f} | "
                    f"{fpr['after']:.3f} |")
    sources = "; ".join(f"{label}: {', '.join(paths) or '-'}" for label, paths in report.sources.items())
    lines = ["## Adaptation", "",
             f"Adapted from `{report.base_model}` with `dualsight adapt` ({report.part} trained, "
             f"{report.seconds:.0f} s on {report.machine}) on {report.shots} of the user's images and "
             f"{report.replay} replayed ones ({sources}). Measured on {report.held_back} of the user's images held "
             "back from training:", "", "| | before | after |", "|---|---|---|", *rows]
    lines += [f"\n**Warning:** {message}" for message in report.warnings]
    return "\n".join(lines) + "\n"


def write_card(folder: Path, report: AdaptationReport) -> None:
    """The card of the adapted folder: the adaptation section above the base model's card, if it had one."""
    base_card = Path(report.base_model) / "README.md"
    text = base_card.read_text() if base_card.exists() else "# DualSight model\n"
    front, separator, body = text.partition("\n---\n") if text.startswith("---\n") else ("", "", text)
    (folder / "README.md").write_text(front + separator + card_section(report) + "\n" + body)
