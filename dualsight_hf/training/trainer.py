"""Fine-tune DualSight models with `Trainer`: the library behind `train.py` and `dualsight train`."""

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import huggingface_hub
import torch
import transformers
from torch.utils.data import WeightedRandomSampler
from transformers import EarlyStoppingCallback, HfArgumentParser, Trainer, TrainingArguments, set_seed

from ..data.augmentation import AugmentationSettings, ImageTransform, collate
from ..data.sources import DataSourceError, drop_unreadable, encode_labels, load_examples
from ..data.split import balancing_weights, split_examples, write_split_record
from ..evaluation.metrics import DualSightMetrics, authenticity_metrics, grouped_authenticity_metrics, object_metrics
from ..evaluation.plots import plot_confusion_matrix, plot_reliability_diagram, plot_roc_curve, plot_training_curves
from ..machine import describe_machine
from ..models.configuration import DEFAULT_AUTHENTICITY_LABELS, DualSightConfig
from ..models.loading import ModelLoadError, first_line, load_image_processor, load_model
from ..models.modeling import DualSightForImageClassification

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model to start from and how its heads look."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A DualSight model (folder or Hub id) to fine-tune further."})
    backbone: str | None = field(default=None, metadata={
        "help": "Pretrained vision checkpoint (folder or Hub id) for a new DualSight model, e.g. microsoft/resnet-50."})
    config: str | None = field(default=None, metadata={
        "help": "A DualSight config folder (e.g. configs/reality-check) for a new model: its backbones, heads, labels "
                "and preprocessing; --backbone then loads pretrained weights into its first backbone."})
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_AUTHENTICITY_LABELS.values()), metadata={
        "help": "Authenticity class names of a new model, in id order."})
    object_labels: str | None = field(default="auto", metadata={
        "help": "Object classes of a new model: 'auto' (every name in the data's objects), a JSON file (a list, or "
                "name -> index as the original obj_label_mapping.json), or 'none' to turn the head off."})
    object_problem_type: str = field(default="multi_label_classification", metadata={
        "help": "multi_label_classification or single_label_classification."})
    object_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the object loss."})
    classifier_dropout: float = field(default=0.0, metadata={"help": "Dropout before the heads."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Train the heads only (BatchNorm kept in eval)."})
    unfrozen_backbone_stages: int = field(default=0, metadata={
        "help": "With --freeze_backbone: train the backbone's last N stages too (about half the cost of training "
                "all of it on a CPU)."})
    backbone_learning_rate: float | None = field(default=None, metadata={
        "help": "Learning rate of the backbone; --learning_rate applies to the heads. Default: the same."})
    artifact_stream: dict | str | None = field(default=None, metadata={
        "help": "Settings of the artifact stream of a new model (a dict in a YAML/JSON recipe, or JSON on the "
                "command line, e.g. '{\"crop_size\": 64}'; see DualSightConfig.artifact_stream). Off by default."})

    def __post_init__(self):
        if isinstance(self.artifact_stream, str):
            self.artifact_stream = json.loads(self.artifact_stream)


@dataclass
class DataArguments:
    """Where the examples come from and how they are split and augmented."""

    data: list[str] = field(metadata={"help": "Image folder (one sub-folder per class), CSV/JSON manifest, or "
                                              "datasets dataset (Hub id or save_to_disk folder); several are "
                                              "concatenated (a YAML list, or several paths after --data)."})
    dataset_split: str = field(default="train", metadata={"help": "Split of a datasets dataset."})
    image_column: str = field(default="image", metadata={"help": "Image column of a datasets dataset."})
    label_column: str = field(default="label", metadata={"help": "Label column of a datasets dataset."})
    objects_file: list[str] | None = field(default=None, metadata={
        "help": "path,objects CSV(s) from `dualsight pseudo-label`, merged by path."})
    validation_size: float = field(default=0.15, metadata={"help": "Validation fraction of each stratum."})
    test_size: float = field(default=0.15, metadata={"help": "Test fraction of each stratum (never used for "
                                                            "model selection)."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation/test split."})
    stratify_by: str | None = field(default=None, metadata={"help": "Column to stratify the split by, e.g. source."})
    holdout_column: str | None = field(default=None, metadata={
        "help": "Leave groups out: rows whose holdout_column is one of holdout_value are the test split, and "
                "training sees none of them (e.g. --holdout_column source --holdout_value ddpm-edit_detect)."})
    holdout_value: str | None = field(default=None, metadata={
        "help": "The held-out group(s) of holdout_column, comma-separated."})
    group_metrics_by: str | None = field(default=None, metadata={
        "help": "Column to report test metrics by (e.g. source, generator). Default: stratify_by."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split."})
    max_validation_samples: int | None = field(default=None, metadata={
        "help": "Evaluate model selection on a seeded random subset of the validation split of this size."})
    max_test_samples: int | None = field(default=None, metadata={
        "help": "Measure the test metrics on a seeded random subset of the test split of this size."})
    balance_by: str | None = field(default=None, metadata={
        "help": "Draw training examples so that every (balance_by value, label) stratum is seen equally often, "
                "e.g. source: a small source weighs as much as a large one. Default: the data as it is."})
    augment: bool = field(default=True, metadata={"help": "Training augmentations (crop, flip, rotation, colour, "
                                                          "JPEG, blur, down-up scaling)."})
    jpeg_p: float = field(default=0.3, metadata={"help": "Probability of JPEG re-compression."})
    blur_p: float = field(default=0.2, metadata={"help": "Probability of Gaussian blur."})
    rescale_p: float = field(default=0.2, metadata={"help": "Probability of downscale-then-upscale."})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many evaluations without improvement of metric_for_best_model."})
    early_stopping_threshold: float = field(default=0.0, metadata={
        "help": "How much metric_for_best_model must improve to count as an improvement."})


class DualSightTrainer(Trainer):
    """
    `Trainer` with a separate learning rate for the backbone and, optionally, weighted sampling of the training
    examples.

    Args:
        backbone_learning_rate (`float`, *optional*): learning rate of the backbone; `args.learning_rate` applies to
            the heads. Default: the same for all.
        sample_weights (`list[float]`, *optional*): one weight per training example (see
            `dualsight_hf.data.split.balancing_weights`); each epoch then draws as many examples as the split holds,
            with replacement, in proportion to them. Default: every example once per epoch, shuffled.
        *args, **kwargs: as `Trainer` takes them.
    """

    def __init__(self, *args, backbone_learning_rate: float | None = None,
                 sample_weights: list[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backbone_learning_rate = backbone_learning_rate
        self.sample_weights = sample_weights

    def _get_train_sampler(self, train_dataset=None):
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.data_seed if self.args.data_seed is not None
                                                  else self.args.seed)
        return WeightedRandomSampler(self.sample_weights, num_samples=len(self.sample_weights), replacement=True,
                                     generator=generator)

    def create_optimizer(self, model=None):
        model = self.model if model is None else model
        if self.optimizer is None and self.backbone_learning_rate is not None:
            decay = set(self.get_decay_parameter_names(model))
            groups = []
            for in_backbone, learning_rate in ((True, self.backbone_learning_rate), (False, self.args.learning_rate)):
                for with_decay in (True, False):
                    params = [p for n, p in model.named_parameters() if p.requires_grad
                              and n.startswith(("dualsight.backbone.", "dualsight.extra_backbones.")) == in_backbone
                              and (n in decay) == with_decay]
                    if params:
                        groups.append({"params": params, "lr": learning_rate,
                                       "weight_decay": self.args.weight_decay if with_decay else 0.0})
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return super().create_optimizer(model)


def read_object_labels(spec: str | None, examples) -> dict[int, str] | None:
    """The object classes of a new model from `ModelArguments.object_labels` (see its help)."""
    if spec is None or spec.lower() == "none":
        return None
    if spec == "auto":
        if "objects" not in examples.column_names:
            return None
        names = sorted({name for cell in examples["objects"] for name in (json.loads(cell) or [])})
        return dict(enumerate(names)) or None
    loaded = json.loads(Path(spec).read_text())
    if isinstance(loaded, dict):
        return {int(index): name for name, index in loaded.items()}
    return dict(enumerate(loaded))


def from_backbone(backbone: str, **kwargs) -> DualSightForImageClassification:
    """`DualSightForImageClassification.from_backbone`, with a one-line `ModelLoadError` when the backbone cannot be
    loaded (no such folder, or a Hub id that cannot be reached offline)."""
    if not Path(backbone).exists() and str(backbone).startswith((".", "/", "~")):
        raise ModelLoadError(f"{backbone}: no such backbone folder")
    try:
        return DualSightForImageClassification.from_backbone(backbone, **kwargs)
    except OSError as error:
        raise ModelLoadError(f"{backbone}: cannot load the backbone ({first_line(error)})") from error


def build_model(model_args: ModelArguments, examples):
    """The model and its image processor, as `ModelArguments` describes them."""
    if model_args.artifact_stream is not None and (model_args.model_name_or_path or model_args.config):
        raise ValueError("--artifact_stream applies to a new model built from --backbone; a model or config folder "
                         "keeps its own artifact_stream setting")
    if model_args.model_name_or_path:
        model = load_model(model_args.model_name_or_path)
        return model, load_image_processor(model_args.model_name_or_path)
    if model_args.config:
        config = DualSightConfig.from_pretrained(model_args.config)
        model = (from_backbone(model_args.backbone, config=config) if model_args.backbone
                 else DualSightForImageClassification(config))
        return model, load_image_processor(model_args.config)
    if not model_args.backbone:
        raise ValueError("give --model_name_or_path (a DualSight model), --config (a DualSight config) or "
                         "--backbone (a pretrained vision model)")
    model = from_backbone(
        model_args.backbone,
        id2label=dict(enumerate(model_args.labels)),
        object_id2label=read_object_labels(model_args.object_labels, examples),
        object_problem_type=model_args.object_problem_type,
        object_loss_weight=model_args.object_loss_weight,
        classifier_dropout=model_args.classifier_dropout,
        freeze_backbone=model_args.freeze_backbone,
        unfrozen_backbone_stages=model_args.unfrozen_backbone_stages,
        artifact_stream=model_args.artifact_stream,
    )
    return model, model.image_processor


def parse_arguments(argv: list[str] | None = None):
    """`(ModelArguments, DataArguments, TrainingArguments)` from the command line or one JSON/YAML file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), allow_abbrev=False)
    for action in parser._actions:
        if action.dest == "remove_unused_columns":
            action.default = False
            action.help = ("Always False here (the default): the on-the-fly image transforms read the dataset's "
                           "image column, which Trainer would otherwise drop as unused.")
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """
    Fine-tune, keep the best checkpoint by `metric_for_best_model` on the validation split, then measure it once on
    the held-out test split.

    Writes to `output_dir`: the model (safetensors, config, processor, code), `all_results.json` (test metrics
    overall, per group and of the object head, plus the split sizes and skipped images), and PNG plots (training
    curves, confusion matrix, ROC, reliability diagram).

    Returns:
        `dict`: the content of `all_results.json`.
    """
    # The on-the-fly transforms read the image column, which Trainer would otherwise drop as an unused column.
    training_args.remove_unused_columns = False
    if not torch.cuda.is_available():  # pinned memory only helps copies to an accelerator (torch warns on CPU)
        training_args.dataloader_pin_memory = False
    set_seed(training_args.seed)
    examples = load_examples(data_args.data, data_args.dataset_split, data_args.image_column,
                             data_args.label_column, data_args.objects_file)
    examples, unreadable = drop_unreadable(examples)
    for message in unreadable:
        logger.warning("skipped unreadable training image: %s", message)
    if unreadable:
        logger.warning("%d unreadable images skipped", len(unreadable))

    model, processor = build_model(model_args, examples)
    splits = split_examples(encode_labels(examples, model.config), data_args.validation_size, data_args.test_size,
                            data_args.split_seed, data_args.stratify_by, data_args.holdout_column,
                            data_args.holdout_value)
    for name, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_validation_samples),
                        ("test", data_args.max_test_samples)):
        if limit and limit < len(splits[name]):
            splits[name] = splits[name].shuffle(seed=data_args.split_seed).select(range(limit))
    augmentation = AugmentationSettings(jpeg_p=data_args.jpeg_p, blur_p=data_args.blur_p,
                                        rescale_p=data_args.rescale_p) if data_args.augment else None
    splits["train"].set_transform(ImageTransform(processor, augmentation, seed=training_args.seed))
    for name in ("validation", "test"):
        splits[name].set_transform(ImageTransform(processor))

    if training_args.label_names is None:
        # Trainer computes losses and metrics only when every label field is present in the batch.
        has_objects = "object_labels" in splits["train"].column_names
        training_args.label_names = ["labels", "object_labels"] if has_objects else ["labels"]
    callbacks = []
    if data_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=data_args.early_stopping_patience,
                                               early_stopping_threshold=data_args.early_stopping_threshold))
    trainer = DualSightTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"] if len(splits["validation"]) else None,
        data_collator=collate,
        compute_metrics=DualSightMetrics(model.config),
        processing_class=processor,
        callbacks=callbacks,
        backbone_learning_rate=model_args.backbone_learning_rate,
        sample_weights=balancing_weights(splits["train"], data_args.balance_by) if data_args.balance_by else None,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    results = {"train": train_result.metrics, "split_sizes": {k: len(v) for k, v in splits.items()},
               "unreadable_images_skipped": len(unreadable),
               "best_checkpoint": {"metric": training_args.metric_for_best_model,
                                   "validation_value": trainer.state.best_metric},
               "recipe": recipe_summary(model_args, data_args, training_args), "machine": describe_machine()}
    if len(splits["test"]):
        results.update(evaluate_split(trainer, splits["test"], data_args.group_metrics_by or data_args.stratify_by))
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
        write_split_record(splits, results["recipe"]["data"], output_dir)
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
    return results


def recipe_summary(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """The arguments that define a run, as plain JSON (for the model card and for reproducing it)."""
    keep = ("seed", "learning_rate", "weight_decay", "num_train_epochs", "per_device_train_batch_size",
            "lr_scheduler_type", "warmup_steps", "max_grad_norm", "bf16", "metric_for_best_model",
            "gradient_accumulation_steps")
    training = {key: getattr(training_args, key) for key in keep}
    training["lr_scheduler_type"] = str(training["lr_scheduler_type"].value if hasattr(
        training["lr_scheduler_type"], "value") else training["lr_scheduler_type"])
    training["world_size"] = training_args.world_size
    return {"model": asdict(model_args), "data": asdict(data_args), "training": training}


def evaluate_split(trainer: Trainer, split, group_column: str | None) -> dict:
    """Test metrics of both heads, overall and per `group_column`, and the test plots in `output_dir`."""
    prediction = trainer.predict(split, metric_key_prefix="test")
    outputs = prediction.predictions if isinstance(prediction.predictions, tuple) else (prediction.predictions,)
    labels = prediction.label_ids if isinstance(prediction.label_ids, tuple) else (prediction.label_ids,)
    config = trainer.model.config
    results = {"test": authenticity_metrics(outputs[0], labels[0])}
    if len(outputs) > 1 and len(labels) > 1:
        results["test_objects"] = object_metrics(outputs[1], labels[1], config.object_problem_type,
                                                 names=config.object_id2label)
    if group_column and group_column in split.column_names:
        results["test_by_" + group_column] = grouped_authenticity_metrics(
            outputs[0], labels[0], split.with_format(None)[group_column]
        )
    if trainer.is_world_process_zero():
        output_dir = Path(trainer.args.output_dir)
        names = [config.id2label[i] for i in range(config.num_labels)]
        plot_confusion_matrix(outputs[0], labels[0], names, output_dir / "confusion_matrix.png")
        if config.num_labels == 2:
            plot_roc_curve(outputs[0], labels[0], output_dir / "roc_curve.png")
        plot_reliability_diagram(outputs[0], labels[0], output_dir / "reliability_diagram.png",
                                 title="Reliability (test split)")
    trainer.log_metrics("test", {k: v for k, v in results["test"].items()})
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of `train.py` and `dualsight train`: a model or data source that cannot be read ends in one line
    on stderr (`train: error: ...`) and exit status 2."""
    model_args, data_args, training_args = parse_arguments(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    # an unreachable Hub id ends in one line below, not in one warning per connection retry
    huggingface_hub.utils.logging.set_verbosity_error()
    try:
        train(model_args, data_args, training_args)
    except (ModelLoadError, DataSourceError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    return 0
