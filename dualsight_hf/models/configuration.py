"""DualSight model configuration."""

import copy
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

DEFAULT_AUTHENTICITY_LABELS = {0: "real", 1: "ai_generated"}
#: Settings of the artifact stream and their defaults (see `DualSightConfig.artifact_stream`).
ARTIFACT_STREAM_DEFAULTS = {"residuals": ["npr", "srm"], "channels": [16, 32, 64, 128], "crop_size": 64,
                            "crops_per_side": 3, "crop_aggregation": "mean", "semantic_features": True}
OBJECT_PROBLEM_TYPES = ("multi_label_classification", "single_label_classification")


@strict
class DualSightConfig(PreTrainedConfig):
    r"""
    Configuration of a DualSight model: one vision backbone with two classification heads, **authenticity** (real
    photograph vs AI-generated, or more classes) and **objects** (what is in the image).

    The authenticity labels use transformers' own `id2label` / `label2id` (so `pipeline("image-classification")`,
    the Hub widget and Trainer read them unchanged); the object labels have their own pair of maps.

    Args:
        backbone_config (`PreTrainedConfig`, `dict` or a list of them, *optional*):
            Configuration of any transformers vision model that yields a pooled image feature (ResNet, MobileNetV2,
            ConvNeXt, ViT, Swin, EfficientNet, DINOv2, timm models through `TimmWrapperConfig`, ...), as a config
            object or as its dict with a `model_type` key. Defaults to the ResNet-50 layout of the original DualSight
            model. A list gives several backbones side by side: the first is kept here, the others go to
            `extra_backbone_configs`.
        extra_backbone_configs (`list[PreTrainedConfig | dict]`, *optional*):
            More backbones run on the same `pixel_values`; their pooled features are concatenated with the first
            backbone's before the heads (the ConvNeXt + Swin layout of ConVitX).
        backbone_preprocessing (`list[dict | None]`, *optional*):
            When the backbones were pretrained with different preprocessing: one entry per backbone. The first says
            how `pixel_values` arrive (`image_mean`, `image_std` of the model's image processor); each later entry
            says what that backbone expects (`image_mean`, `image_std`, optional `size` as `[height, width]`), and
            the model re-normalises and resizes the input for it. `None` (the default, or an entry) when one
            processor serves all.
        artifact_stream (`dict`, *optional*):
            Adds a second input stream that looks at generation artifacts rather than content (off when `None`, the
            default). It reads `artifact_values`, crops of the image at its native resolution (no resizing, small
            images padded by tiling) made by [`DualSightImageProcessor`], turns them into fixed residuals and runs a
            small CNN ([`~artifacts.ArtifactEncoder`]); its pooled feature is concatenated with the semantic
            backbones' feature for the authenticity head only (the object head keeps the semantic feature).
            Keys, with their defaults:
            - `residuals` (`["npr", "srm"]`): the neighbouring-pixel residual `x - up(down(x))` and the SRM
              high-pass bank;
            - `channels` (`[16, 32, 64, 128]`): widths of the CNN's stages;
            - `crop_size` (`64`): side of a crop, in pixels, even;
            - `crops_per_side` (`3`): at test time the image is scored on a `crops_per_side` x `crops_per_side` grid
              of crops (training takes one random crop per image);
            - `crop_aggregation` (`"mean"`): how the per-crop authenticity logits are combined: `"mean"` (mean
              logits) or `"max"` (the crop that looks least like class 0, the real class);
            - `semantic_features` (`True`): `False` gives an artifact-only authenticity head (the semantic backbone
              then only serves the object head, and is not run when there is none).
        id2label (`dict[int, str]`, *optional*, defaults to `{0: "real", 1: "ai_generated"}`):
            Authenticity classes. Any number of classes is allowed (e.g. `{0: "human", 1: "dalle", 2: "other_ai"}`).
        label2id (`dict[str, int]`, *optional*):
            Inverse of `id2label`; derived from it when not given.
        object_id2label (`dict[int, str]`, *optional*):
            Object classes of the object head. Keys come back as integers after a JSON round trip.
        object_label2id (`dict[str, int]`, *optional*):
            Inverse of `object_id2label`; derived from it when not given.
        num_object_labels (`int`, *optional*):
            Shortcut that creates `object_id2label` as `OBJECT_0 ... OBJECT_{n-1}` when no names are given. `0` (the
            default when no object labels are given) turns the object head off.
        object_problem_type (`str`, *optional*, defaults to `"multi_label_classification"`):
            `"multi_label_classification"`: one sigmoid per object class, trained on multi-hot presence vectors (the
            recommended form). `"single_label_classification"`: one softmax over object classes, e.g. the original
            DualSight's comma-joined combination classes ("bottle, cup, person").
        authenticity_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the authenticity loss in the total loss.
        object_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the object loss in the total loss.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout probability applied to the pooled feature before both heads.
        authenticity_head (`dict`, *optional*):
            An MLP instead of the linear authenticity head: `{"hidden_sizes": [1000, 500], "activation": "relu",
            "dropout": 0.0, "norm": None}`; `norm` (`"batch_norm"` or `"layer_norm"`) normalises the head's input.
        object_head (`dict`, *optional*):
            The same for the object head.
        authenticity_single_logit (`bool`, *optional*, defaults to `False`):
            Two-class models only: the head has one output `z` (sigmoid, binary cross-entropy). The model still
            returns two logits, `[-z/2, z/2]`, whose softmax is `[1 - sigmoid(z), sigmoid(z)]`, so pipelines report
            both labels with probabilities summing to 1.
        freeze_backbone (`bool`, *optional*, defaults to `False`):
            Freeze the backbones and keep their normalisation layers in eval mode, so that only the heads train
            (the recipe of the DenseNet and "Reality Check" model cards).
        unfrozen_backbone_stages (`int`, *optional*, defaults to 0):
            With `freeze_backbone`, keep the last this many stages (blocks) of each backbone, and everything after
            them, trainable.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of the head weights.
        temperature (`float`, *optional*, defaults to 1.0):
            Authenticity logits are divided by this before the softmax in every reported probability (temperature
            scaling, fitted by `dualsight calibrate`); the logits themselves are unchanged.
        decision_threshold (`float`, *optional*):
            Two-class models: the calibrated probability of class 1 (`ai_generated`) at or above which the decision
            is class 1, e.g. chosen for a target false-positive rate on real images. `None` means 0.5.
        inference_dtype (`str`, *optional*):
            The precision `dualsight predict --dtype auto` uses for this model. `None`: bfloat16 where the hardware
            runs it fast. `"float32"` for models whose answers bfloat16 would change (set by
            `precision.choose_inference_dtype` from a measurement on a validation split).
        uncertain_band (`float`, *optional*, defaults to 0.0):
            Two-class models: a decision whose class-1 probability lies within this distance of the threshold is
            reported as `"uncertain"`. 0 turns the band off.

    Example:

    ```python
    >>> from transformers import MobileNetV2Config
    >>> from dualsight_hf import DualSightConfig, DualSightForImageClassification

    >>> # The original DualSight layout: ResNet-50, 2 authenticity classes, object head off
    >>> configuration = DualSightConfig()

    >>> # A small MobileNetV2 model with a multi-label head over three object classes
    >>> configuration = DualSightConfig(
    ...     backbone_config=MobileNetV2Config(depth_multiplier=0.35),
    ...     object_id2label={0: "person", 1: "car", 2: "dog"},
    ... )
    >>> model = DualSightForImageClassification(configuration)
    >>> model.config.num_object_labels
    3
    ```
    """

    model_type = "dualsight"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet")}
    # Per-head losses are scalars: Trainer must not gather them as predictions.
    keys_to_ignore_at_inference = ["authenticity_loss", "object_loss", "hidden_states"]

    backbone_config: dict | PreTrainedConfig | list | None = None
    extra_backbone_configs: list | None = None
    backbone_preprocessing: list | None = None
    backbone_feature_layers: list[int] | None = None
    artifact_stream: dict | None = None
    authenticity_head: dict | None = None
    object_head: dict | None = None
    authenticity_single_logit: bool = False
    unfrozen_backbone_stages: int = 0
    object_id2label: dict[int, str] | dict[str, str] | None = None
    object_label2id: dict[str, int] | dict[str, str] | None = None
    object_problem_type: Literal["multi_label_classification", "single_label_classification"] = (
        "multi_label_classification"
    )
    authenticity_loss_weight: float = 1.0
    object_loss_weight: float = 1.0
    classifier_dropout: float = 0.0
    freeze_backbone: bool = False
    initializer_range: float = 0.02
    temperature: float = 1.0
    decision_threshold: float | None = None
    inference_dtype: str | None = None
    uncertain_band: float = 0.0

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone_config, (list, tuple)):
            first, *rest = self.backbone_config
            self.backbone_config = first
            self.extra_backbone_configs = list(rest) + list(self.extra_backbone_configs or [])
        if self.extra_backbone_configs:
            self.extra_backbone_configs = [
                config if isinstance(config, PreTrainedConfig) else AutoConfig.for_model(**config)
                for config in self.extra_backbone_configs
            ]
        if self.artifact_stream is not None:
            self.artifact_stream = {**copy.deepcopy(ARTIFACT_STREAM_DEFAULTS), **self.artifact_stream}
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(DEFAULT_AUTHENTICITY_LABELS)
        if self.id2label is not None and self.label2id is None:
            self.label2id = {name: index for index, name in self.id2label.items()}

        num_object_labels = kwargs.pop("num_object_labels", None)
        if self.object_id2label is None and num_object_labels:
            self.object_id2label = {i: f"OBJECT_{i}" for i in range(num_object_labels)}
        if self.object_id2label is not None:
            # JSON turns integer keys into strings
            self.object_id2label = {int(index): name for index, name in self.object_id2label.items()}
            self.object_label2id = {name: index for index, name in self.object_id2label.items()}
        super().__post_init__(**kwargs)
        if self.label2id is not None:
            self.label2id = {name: int(index) for name, index in self.label2id.items()}

    @property
    def backbone_configs(self) -> list[PreTrainedConfig]:
        """`list[PreTrainedConfig]`: every backbone's configuration, the first one first."""
        return [self.backbone_config, *(self.extra_backbone_configs or [])]

    def to_dict(self) -> dict:
        output = super().to_dict()
        if self.extra_backbone_configs:
            output["extra_backbone_configs"] = [config.to_dict() for config in self.extra_backbone_configs]
        return output

    @property
    def num_object_labels(self) -> int:
        """`int`: number of object classes; 0 when the object head is off."""
        return len(self.object_id2label) if self.object_id2label else 0

    def validate_dualsight_settings(self):
        """Part of `@strict` validation: label maps, heads, backbones and calibration settings are consistent."""
        if self.object_id2label:
            if sorted(int(i) for i in self.object_id2label) != list(range(len(self.object_id2label))):
                raise ValueError(
                    f"object_id2label keys must be 0..{len(self.object_id2label) - 1}, got {sorted(self.object_id2label)}"
                )
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout}")
        if self.backbone_preprocessing is not None:
            if len(self.backbone_preprocessing) != len(self.backbone_configs):
                raise ValueError(f"backbone_preprocessing needs one entry per backbone ({len(self.backbone_configs)}),"
                                 f" got {len(self.backbone_preprocessing)}")
            if any(entry for entry in self.backbone_preprocessing[1:]) and not self.backbone_preprocessing[0]:
                raise ValueError("backbone_preprocessing[0] must give the image_mean and image_std of the input")
        if self.backbone_feature_layers is not None:
            self._validate_backbone_feature_layers()
        if self.authenticity_single_logit and self.num_labels != 2:
            raise ValueError("authenticity_single_logit needs exactly two authenticity labels")
        for name in ("authenticity_head", "object_head"):
            spec = getattr(self, name) or {}
            unknown = set(spec) - {"hidden_sizes", "activation", "dropout", "norm"}
            if unknown:
                raise ValueError(f"{name} has unknown keys {sorted(unknown)}")
            if spec.get("norm") not in (None, "batch_norm", "layer_norm"):
                raise ValueError(f"{name}['norm'] must be batch_norm, layer_norm or None, got {spec['norm']!r}")
        if self.artifact_stream is not None:
            self._validate_artifact_stream()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.decision_threshold is not None and not 0.0 < self.decision_threshold < 1.0:
            raise ValueError(f"decision_threshold must be in (0, 1), got {self.decision_threshold}")
        if not 0.0 <= self.uncertain_band < 0.5:
            raise ValueError(f"uncertain_band must be in [0, 0.5), got {self.uncertain_band}")

    def _validate_backbone_feature_layers(self):
        layers, backbone = self.backbone_feature_layers, self.backbone_config
        depth = getattr(backbone, "num_hidden_layers", None)
        if not getattr(backbone, "hidden_size", None) or depth is None:
            raise ValueError(f"backbone_feature_layers needs a backbone whose hidden states have hidden_size channels "
                             f"(ViT, CLIP vision, DINOv2, ...); a '{backbone.model_type}' backbone has none")
        if not layers or any(not 0 <= layer <= depth for layer in layers):
            raise ValueError(f"backbone_feature_layers must be hidden-state indices in 0..{depth}, got {layers}")

    def _validate_artifact_stream(self):
        stream = self.artifact_stream
        unknown = set(stream) - set(ARTIFACT_STREAM_DEFAULTS)
        if unknown:
            raise ValueError(f"artifact_stream has unknown keys {sorted(unknown)}")
        if not stream["residuals"] or set(stream["residuals"]) - {"npr", "srm"}:
            raise ValueError(f"artifact_stream['residuals'] must be a non-empty list of npr, srm, got "
                             f"{stream['residuals']}")
        if stream["crop_size"] < 8 or stream["crop_size"] % 2:
            raise ValueError(f"artifact_stream['crop_size'] must be an even number >= 8, got {stream['crop_size']}")
        if stream["crops_per_side"] < 1:
            raise ValueError(f"artifact_stream['crops_per_side'] must be >= 1, got {stream['crops_per_side']}")
        if stream["crop_aggregation"] not in ("mean", "max"):
            raise ValueError(f"artifact_stream['crop_aggregation'] must be mean or max, got "
                             f"{stream['crop_aggregation']!r}")
        if not stream["channels"] or any(width < 1 for width in stream["channels"]):
            raise ValueError(f"artifact_stream['channels'] must be positive widths, got {stream['channels']}")


__all__ = ["DualSightConfig"]
