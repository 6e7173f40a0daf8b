"""DualSight: one vision backbone, an authenticity head and an object head."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils import logging as transformers_logging

from .artifacts import ArtifactEncoder
from .configuration import DualSightConfig
from .image_processing import image_processor_for_model
from .pipeline import DualSightImageClassificationPipeline

logger = transformers_logging.get_logger(__name__)

# Backbones whose own pooler is a trained-for-pretraining projection; their classifiers read the first token instead.
_FIRST_TOKEN_POOLED = ("vit", "deit")


@dataclass
class DualSightImageClassifierOutput(ModelOutput):
    r"""
    Output of [`DualSightForImageClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when labels are given):
            Weighted sum of the losses of the heads that received labels.
        logits (`torch.FloatTensor` of shape `(batch_size, config.num_labels)`):
            Authenticity scores (before softmax). Named `logits` so that the stock image-classification machinery
            reads them unchanged.
        object_logits (`torch.FloatTensor` of shape `(batch_size, config.num_object_labels)`, *optional*):
            Object scores (before sigmoid or softmax); `None` when the object head is off.
        authenticity_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Unweighted cross-entropy of the authenticity head.
        object_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Unweighted loss of the object head over the examples that have object labels.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The backbone's hidden states.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    object_logits: torch.FloatTensor | None = None
    authenticity_loss: torch.FloatTensor | None = None
    object_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class DualSightModelOutput(ModelOutput):
    r"""
    Output of [`DualSightModel`]: the features the heads read.

    Args:
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
            The pooled features of every backbone, concatenated (the first backbone's taken from
            `config.backbone_feature_layers` when set); `None` when no `pixel_values` were given.
        artifact_features (`torch.FloatTensor` of shape `(batch_size, num_crops, artifact_feature_size)`, *optional*):
            The artifact stream's feature of every crop in `artifact_values`; `None` without an artifact stream or
            without `artifact_values`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The first backbone's hidden states.
    """

    pooler_output: torch.FloatTensor | None = None
    artifact_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def pooled_feature_size(backbone_config: PreTrainedConfig, backbone: nn.Module | None = None) -> int:
    """Width of the pooled feature that a transformers vision backbone built from `backbone_config` returns.

    Args:
        backbone_config (`PreTrainedConfig`): the backbone's configuration.
        backbone (`nn.Module`, *optional*): the built backbone, needed for timm models (`TimmWrapperConfig`), whose
            width only the timm model knows.

    Returns:
        `int`: the feature width.

    Raises:
        `ValueError`: for a backbone family whose feature width cannot be read from its configuration.
    """
    if backbone_config.model_type == "mobilenet_v2":
        from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import apply_depth_multiplier

        if backbone_config.finegrained_output and backbone_config.depth_multiplier < 1.0:
            return 1280
        return apply_depth_multiplier(backbone_config, 1280)
    if backbone_config.model_type == "timm_wrapper" and backbone is not None:
        return backbone.timm_model.num_features
    if backbone_config.model_type == "efficientnet":
        return backbone_config.hidden_dim
    if getattr(backbone_config, "hidden_sizes", None):
        return backbone_config.hidden_sizes[-1]
    if getattr(backbone_config, "hidden_size", None):
        return backbone_config.hidden_size
    raise ValueError(
        f"Cannot tell the pooled feature width of a '{backbone_config.model_type}' backbone from its configuration."
    )


def pool_hidden_state(hidden: torch.Tensor) -> torch.Tensor:
    """One feature vector per image from a hidden state: the first token of a sequence `(batch, tokens, channels)`,
    the spatial mean of a feature map `(batch, channels, height, width)`."""
    return hidden[:, 0] if hidden.ndim == 3 else hidden.mean(dim=(2, 3))


def pool_backbone_output(outputs: ModelOutput) -> torch.Tensor:
    """One feature vector per image: the backbone's pooler output if it has one, else its last hidden state pooled
    by [`pool_hidden_state`]."""
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is None:
        pooled = pool_hidden_state(outputs.last_hidden_state)
    return pooled.flatten(1)


def build_backbone(backbone_config: PreTrainedConfig) -> PreTrainedModel:
    """The base model (`AutoModel`) for `backbone_config`, without a pooler that DualSight would not use."""
    if backbone_config.model_type in _FIRST_TOKEN_POOLED:
        return AutoModel.from_config(backbone_config, add_pooling_layer=False)
    return AutoModel.from_config(backbone_config)


def use_torch_batchnorm_momentum(module: nn.Module) -> None:
    """Some transformers ports (MobileNetV2, DeepLab) pass TensorFlow's BatchNorm momentum (0.997, the weight of the
    old statistics) to PyTorch, where it is the weight of the new batch: every training step would all but replace
    the running statistics with one batch's. Such momenta are set to PyTorch's default, 0.1, which suits
    fine-tuning; eval-mode outputs are unaffected."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.momentum is not None and child.momentum > 0.5:
            child.momentum = 0.1


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def build_head(in_features: int, out_features: int, spec: dict | None) -> nn.Module:
    """
    A classification head: `nn.Linear` when `spec` gives no hidden layers, else an MLP
    `[norm] -> (Linear -> activation -> dropout) x len(hidden_sizes) -> Linear`.

    Args:
        in_features (`int`), out_features (`int`): input and output widths.
        spec (`dict`, *optional*): `hidden_sizes` (`list[int]`), `activation` (`relu`, `gelu`, `silu`, `tanh`;
            default `relu`), `dropout` (`float`, default 0), `norm` (`batch_norm`, `layer_norm` or `None`).
    """
    spec = spec or {}
    hidden_sizes = list(spec.get("hidden_sizes") or [])
    if not hidden_sizes and not spec.get("norm"):
        return nn.Linear(in_features, out_features)
    layers = []
    if spec.get("norm") == "batch_norm":
        layers.append(nn.BatchNorm1d(in_features))
    elif spec.get("norm") == "layer_norm":
        layers.append(nn.LayerNorm(in_features))
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[spec.get("activation", "relu")](),
                   nn.Dropout(spec.get("dropout", 0.0))]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def freeze_all_but_last_stages(backbone: nn.Module, unfrozen_stages: int) -> None:
    """
    Freeze a backbone, then unfreeze its last `unfrozen_stages` stages and everything registered after them (final
    norms, the last 1x1 convolution). The stages are the backbone's longest `nn.ModuleList` (ResNet and ConvNeXt
    stages, MobileNetV2 blocks, ViT and Swin layers).
    """
    backbone.requires_grad_(False)
    if unfrozen_stages <= 0:
        return
    stage_lists = [m for m in backbone.modules() if isinstance(m, nn.ModuleList)]
    if not stage_lists:
        return
    stages = max(stage_lists, key=len)
    first_trainable = {id(p) for p in stages[max(0, len(stages) - unfrozen_stages)].parameters()}
    trainable = False
    for parameter in backbone.parameters():
        trainable = trainable or id(parameter) in first_trainable
        parameter.requires_grad_(trainable)


def adapt_input(pixel_values: torch.Tensor, given: dict, wanted: dict) -> torch.Tensor:
    """
    Re-express images normalised with `given` (`image_mean`, `image_std`) as a backbone that wants `wanted`
    (`image_mean`, `image_std`, optional `size` `[height, width]`) expects them: undo one normalisation, apply the
    other, resize (bilinear, antialiased) if the size differs.
    """
    def stats(settings, key):
        return torch.tensor(settings[key], dtype=pixel_values.dtype, device=pixel_values.device)[None, :, None, None]

    images = pixel_values * stats(given, "image_std") + stats(given, "image_mean")
    images = (images - stats(wanted, "image_mean")) / stats(wanted, "image_std")
    size = wanted.get("size")
    if size and tuple(size) != tuple(images.shape[-2:]):
        images = nn.functional.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False,
                                           antialias=True)
    return images


class DualSightPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the transformers plumbing shared by DualSight models."""

    config: DualSightConfig
    config_class = DualSightConfig
    base_model_prefix = "dualsight"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module):
        # Backbone sub-models initialise their own modules; this only reaches the heads.
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # the artifact stream's CNN
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)


#: The checkpoint layout before the headless `DualSightModel` (the default and mobile models' first releases, converted
#: DualSight weights): the backbones and the artifact stream sat at the top level. `from_pretrained` renames them.
LEGACY_KEY_MAPPING = {r"^(backbone|extra_backbones|artifact_encoder)\.": r"dualsight.\1."}


class DualSightModel(DualSightPreTrainedModel):
    """
    The DualSight model without its heads: the vision backbone(s) and, with `config.artifact_stream`, the
    [`~artifacts.ArtifactEncoder`] that reads native-resolution crops. It returns the features the heads read
    ([`DualSightModelOutput`]); `AutoModel` maps a DualSight configuration to it, as transformers does for
    `ResNetModel`, and [`DualSightForImageClassification`] holds one as `dualsight` (`base_model_prefix`).

    Args:
        config ([`DualSightConfig`]): the model configuration.

    Example:

    ```python
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> from dualsight_hf import MOBILE_MODEL_DIR, load_image

    >>> model = AutoModel.from_pretrained(MOBILE_MODEL_DIR)  # a DualSightModel: the mobile model without its heads
    >>> processor = AutoImageProcessor.from_pretrained(MOBILE_MODEL_DIR)
    >>> outputs = model(**processor(load_image("examples/real/chelsea.png"), return_tensors="pt"))
    >>> outputs.pooler_output.shape, outputs.artifact_features.shape  # one row of artifact features per crop
    (torch.Size([1, 1280]), torch.Size([1, 9, 128]))
    ```
    """

    _keys_to_ignore_on_load_unexpected = [r"^classifier\.", r"^object_classifier\."]

    def __init__(self, config: DualSightConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.extra_backbones = (nn.ModuleList(build_backbone(c) for c in config.extra_backbone_configs)
                                if config.extra_backbone_configs else None)
        widths = [pooled_feature_size(c, b) for c, b in zip(config.backbone_configs, self.backbones)]
        if config.backbone_feature_layers:
            widths[0] = len(config.backbone_feature_layers) * config.backbone_config.hidden_size
        #: width of `pooler_output`
        self.feature_size = sum(widths)
        stream = config.artifact_stream
        self.artifact_encoder = ArtifactEncoder(stream["residuals"], stream["channels"]) if stream else None
        for backbone in self.backbones:
            use_torch_batchnorm_momentum(backbone)
        self.post_init()

    @property
    def backbones(self) -> list[nn.Module]:
        """Every backbone, the first one first."""
        return [self.backbone, *(self.extra_backbones or [])]

    def semantic_features(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None):
        """The pooled features of every backbone (the first one's from `config.backbone_feature_layers` when set),
        concatenated, and the first backbone's outputs."""
        layers = self.config.backbone_feature_layers
        backbone_outputs = self.backbone(pixel_values, output_hidden_states=bool(output_hidden_states or layers),
                                         return_dict=True)
        if layers:
            features = [pool_hidden_state(backbone_outputs.hidden_states[layer]) for layer in layers]
        else:
            features = [pool_backbone_output(backbone_outputs)]
        preprocessing = self.config.backbone_preprocessing or [None] * len(self.backbones)
        for extra, wanted in zip(self.extra_backbones or [], preprocessing[1:]):
            inputs = adapt_input(pixel_values, preprocessing[0], wanted) if wanted else pixel_values
            features.append(pool_backbone_output(extra(inputs, return_dict=True)))
        return (torch.cat(features, dim=-1) if len(features) > 1 else features[0]), backbone_outputs

    def artifact_features(self, artifact_values: torch.Tensor) -> torch.Tensor:
        """The artifact stream's feature of every crop, `(batch, crops, features)`, from `artifact_values` of shape
        `(batch, crops, 3, size, size)` or `(batch, 3, size, size)` (one crop)."""
        if artifact_values.ndim == 4:
            artifact_values = artifact_values[:, None]
        batch, crops = artifact_values.shape[:2]
        features = self.artifact_encoder(artifact_values.flatten(0, 1))  # one row per (image, crop), image-major
        return features.reshape(batch, crops, features.shape[-1])

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        artifact_values: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DualSightModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`, *optional*):
                Images as the model's image processor makes them; without them there is no `pooler_output`.
            artifact_values (`torch.FloatTensor` of shape `(batch_size, num_crops, 3, crop_size, crop_size)`, *optional*):
                Native-resolution crops, scaled to [0, 1], for the artifact stream.
            output_hidden_states (`bool`, *optional*):
                Whether to return the first backbone's hidden states.
            return_dict (`bool`, *optional*):
                Whether to return a [`DualSightModelOutput`] instead of a tuple.

        Returns:
            [`DualSightModelOutput`] or `tuple`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pooled = backbone_outputs = artifact = None
        if pixel_values is not None:
            pooled, backbone_outputs = self.semantic_features(pixel_values, output_hidden_states)
        if artifact_values is not None and self.artifact_encoder is not None:
            artifact = self.artifact_features(artifact_values)
        output = DualSightModelOutput(
            pooler_output=pooled,
            artifact_features=artifact,
            hidden_states=backbone_outputs.hidden_states if output_hidden_states and backbone_outputs is not None
            else None,
        )
        return output if return_dict else output.to_tuple()


class DualSightForImageClassification(DualSightPreTrainedModel):
    """
    DualSight model: a [`DualSightModel`] (`dualsight`: a transformers vision backbone and its pooled feature), then
    an authenticity head (`logits`) and an optional object head (`object_logits`). With `config.artifact_stream`, the
    [`~artifacts.ArtifactEncoder`] of `dualsight` also reads native-resolution crops (`artifact_values`); the
    authenticity head scores each crop from the semantic feature and that crop's artifact feature, and the crops'
    logits are combined as `config.artifact_stream["crop_aggregation"]` says.

    Args:
        config ([`DualSightConfig`]): the model configuration.

    Example:

    ```python
    >>> import torch
    >>> from transformers import ResNetConfig
    >>> from dualsight_hf import DualSightConfig, DualSightForImageClassification

    >>> config = DualSightConfig(
    ...     backbone_config=ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
    ...     object_id2label={0: "person", 1: "dog"},
    ... )
    >>> model = DualSightForImageClassification(config)
    >>> outputs = model(
    ...     torch.randn(2, 3, 64, 64),
    ...     labels=torch.tensor([0, 1]),
    ...     object_labels=torch.tensor([[1.0, 0.0], [-100.0, -100.0]]),  # second image has no object labels
    ... )
    >>> outputs.logits.shape, outputs.object_logits.shape
    (torch.Size([2, 2]), torch.Size([2, 2]))
    ```
    """

    def __init__(self, config: DualSightConfig):
        super().__init__(config)
        self.dualsight = DualSightModel(config)
        stream = config.artifact_stream
        feature_size = self.dualsight.feature_size
        authenticity_features = 0 if stream and not stream["semantic_features"] else feature_size
        if self.dualsight.artifact_encoder is not None:
            authenticity_features += self.dualsight.artifact_encoder.feature_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        outputs = 1 if config.authenticity_single_logit else config.num_labels
        self.classifier = build_head(authenticity_features, outputs, config.authenticity_head)
        self.object_classifier = (build_head(feature_size, config.num_object_labels, config.object_head)
                                  if config.num_object_labels > 0 else None)
        #: the image processor that `save_pretrained` writes beside the weights (set by `from_backbone`)
        self.image_processor = None
        self.apply_freezing()
        self.post_init()

    def apply_freezing(self) -> None:
        """Freeze the backbones as `config.freeze_backbone` and `config.unfrozen_backbone_stages` say."""
        if self.config.freeze_backbone:
            for backbone in self.dualsight.backbones:
                freeze_all_but_last_stages(backbone, self.config.unfrozen_backbone_stages)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Checkpoints in the layout from before `DualSightModel` load as they are (`LEGACY_KEY_MAPPING`), beside a
        # caller's own key mapping.
        kwargs["key_mapping"] = {**LEGACY_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        model = super().from_pretrained(*args, **kwargs)
        # Loading materialises fresh parameters (requires_grad=True): freeze again what the config freezes.
        model.apply_freezing()
        return model

    @classmethod
    def from_backbone(
        cls, pretrained_backbone_name_or_path: str, backbone_kwargs: dict | None = None,
        config: DualSightConfig | None = None, **config_kwargs
    ) -> "DualSightForImageClassification":
        """
        A DualSight model whose backbone starts from pretrained weights and whose heads are new.

        Args:
            pretrained_backbone_name_or_path (`str`):
                Hub id (e.g. `"microsoft/resnet-50"`) or local folder of a transformers vision checkpoint; a
                classification checkpoint works too (its own head is dropped).
            backbone_kwargs (`dict`, *optional*):
                Extra arguments for `AutoModel.from_pretrained` (`revision`, `local_files_only`, ...).
            config ([`DualSightConfig`], *optional*):
                A complete configuration (e.g. one of `configs/`) whose first backbone has the checkpoint's
                architecture; by default one is made from the checkpoint's config and `config_kwargs`.
            **config_kwargs:
                Arguments of [`DualSightConfig`] (labels, object labels, loss weights, ...).

        Returns:
            [`DualSightForImageClassification`]: its `image_processor` is the checkpoint's own processor settings (or
            the stock ones of its family), wrapped for the artifact stream when the config has one; `save_pretrained`
            writes it beside the weights.

        Example:

        ```python
        >>> from dualsight_hf import DualSightForImageClassification, load_pipeline
        >>> model = DualSightForImageClassification.from_backbone(
        ...     "../shared/weights/mobilenet-v2-1.0-224-imagenet", object_id2label={0: "person", 1: "car"}
        ... )
        >>> model.save_pretrained("new-model")  # weights, config, code and preprocessor_config.json
        >>> classifier = load_pipeline("new-model")
        ```
        """
        if config is None:
            backbone_config = AutoConfig.from_pretrained(pretrained_backbone_name_or_path, **(backbone_kwargs or {}))
            backbone_config_dict = backbone_config.to_dict()
            for key in ("id2label", "label2id", "architectures", "_name_or_path"):
                backbone_config_dict.pop(key, None)
            config = DualSightConfig(backbone_config=backbone_config_dict, **config_kwargs)
        model = cls(config)
        # transformers' load report would list a classification checkpoint's own head as "unexpected" keys: that
        # head is dropped on purpose, which is said once below instead
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            pretrained, loading = AutoModel.from_pretrained(pretrained_backbone_name_or_path, output_loading_info=True,
                                                            **(backbone_kwargs or {}))
        finally:
            transformers_logging.set_verbosity(verbosity)
        if loading["unexpected_keys"]:
            logger.info("%s: the checkpoint's own head (%s) is not used", pretrained_backbone_name_or_path,
                        ", ".join(sorted(loading["unexpected_keys"])))
        missing, unexpected = model.dualsight.backbone.load_state_dict(pretrained.state_dict(), strict=False)
        # A pooler DualSight does not build (ViT's) is the only thing allowed to differ.
        if missing or any(not key.startswith("pooler.") for key in unexpected):
            raise ValueError(
                f"Backbone weights of {pretrained_backbone_name_or_path} do not fit: missing {missing}, "
                f"unexpected {unexpected}"
            )
        try:
            semantic = AutoImageProcessor.from_pretrained(pretrained_backbone_name_or_path, backend="pil",
                                                          **(backbone_kwargs or {}))
        except OSError:  # a checkpoint saved without its processor: the stock settings of its family
            semantic = None
        model.image_processor = image_processor_for_model(config, semantic)
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen parts keep their normalisation statistics: batch statistics must not leak into them (a frozen
        # backbone, or the parts that few-shot adaptation leaves as they are).
        for module in self.modules():
            parameters = list(module.parameters()) if isinstance(module, nn.modules.batchnorm._BatchNorm) else []
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
        return self

    def authenticity_logits(self, semantic: torch.Tensor | None, artifact_values: torch.Tensor | None) -> torch.Tensor:
        """
        Authenticity logits from the (dropped-out) semantic feature (`None` for an artifact-only head) and, with an
        artifact stream, the crops in `artifact_values` (`(batch, crops, 3, size, size)` or `(batch, 3, size, size)`):
        every crop is scored, then the crops' logits are combined (`crop_aggregation`).
        """
        return self.authenticity_logits_from_inputs(self.authenticity_head_inputs(semantic, artifact_values))

    def authenticity_head_inputs(self, semantic: torch.Tensor | None,
                                 artifact_values: torch.Tensor | None) -> torch.Tensor:
        """
        What the authenticity head reads, `(batch, crops, features)`: per crop, the semantic feature and that crop's
        artifact feature; without an artifact stream, the semantic feature as one "crop". Everything before the head
        is here, so a head trained alone can be trained on these inputs computed once (see `adaptation`).
        """
        if self.dualsight.artifact_encoder is None:
            return semantic[:, None]
        if artifact_values is None:
            raise ValueError("This model has an artifact stream: pass artifact_values, the native-resolution crops "
                             "that its image processor (DualSightImageProcessor) makes")
        features = self.dropout(self.dualsight.artifact_features(artifact_values))
        if semantic is None:
            return features
        batch, crops = features.shape[:2]
        # one row per (image, crop), image-major: the semantic feature repeated beside each crop's
        rows = torch.cat([semantic.repeat_interleave(crops, dim=0).to(features.dtype), features.flatten(0, 1)], dim=1)
        return rows.reshape(batch, crops, rows.shape[-1])

    def authenticity_logits_from_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The head on [`authenticity_head_inputs`]: every crop scored, the crops' logits combined."""
        batch, crops = inputs.shape[:2]
        logits = self._head_logits(inputs.flatten(0, 1))
        per_crop = logits.reshape(batch, crops, logits.shape[-1])
        if self.dualsight.artifact_encoder is None:
            return per_crop[:, 0]
        if self.config.artifact_stream["crop_aggregation"] == "max":
            # the crop with the lowest probability of class 0 (real); gather, not fancy indexing, so ONNX exports it
            chosen = per_crop.float().log_softmax(dim=2)[:, :, 0].argmin(dim=1, keepdim=True)
            return per_crop.gather(1, chosen[..., None].expand(-1, 1, per_crop.shape[-1])).squeeze(1)
        return per_crop.mean(dim=1)

    def _head_logits(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(features)
        if self.config.authenticity_single_logit:
            # softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)], and cross-entropy on it is BCE on z
            logits = torch.cat([-logits / 2, logits / 2], dim=-1)
        return logits

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        artifact_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        object_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DualSightImageClassifierOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Images as the model's image processor makes them.
            artifact_values (`torch.FloatTensor` of shape `(batch_size, num_crops, 3, crop_size, crop_size)`, *optional*):
                Native-resolution crops, scaled to [0, 1], for the artifact stream (required when the config has
                one): what [`DualSightImageProcessor`] returns next to `pixel_values`.
            labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                Authenticity class indices; `-100` marks an example without one.
            object_labels (`torch.Tensor`, *optional*):
                Multi-label: float multi-hot of shape `(batch_size, num_object_labels)`, where `-100` marks an unknown
                entry (a whole row of `-100`: no object labels for that image). Single-label: `torch.LongTensor` of
                shape `(batch_size,)`, `-100` for none. Examples without object labels add no object loss.
            output_hidden_states (`bool`, *optional*):
                Whether to return the backbone's hidden states.
            return_dict (`bool`, *optional*):
                Whether to return a [`DualSightImageClassifierOutput`] instead of a tuple.

        Returns:
            [`DualSightImageClassifierOutput`] or `tuple`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        stream = self.config.artifact_stream
        semantic_for_authenticity = not stream or stream["semantic_features"]
        needs_pixels = semantic_for_authenticity or self.object_classifier is not None or output_hidden_states
        outputs = self.dualsight(pixel_values if needs_pixels else None, output_hidden_states=output_hidden_states,
                                 return_dict=True)
        features = self.dropout(outputs.pooler_output) if outputs.pooler_output is not None else None
        logits = self.authenticity_logits(features if semantic_for_authenticity else None, artifact_values)
        object_logits = self.object_classifier(features) if self.object_classifier is not None else None

        authenticity_loss = object_loss = loss = None
        if labels is not None:
            authenticity_loss = self._authenticity_loss(logits, labels)
        if object_labels is not None and object_logits is not None:
            object_loss = self._object_loss(object_logits, object_labels)
        weighted = [
            weight * part
            for weight, part in (
                (self.config.authenticity_loss_weight, authenticity_loss),
                (self.config.object_loss_weight, object_loss),
            )
            if part is not None
        ]
        if weighted:
            loss = torch.stack(weighted).sum()

        output = DualSightImageClassifierOutput(
            loss=loss,
            logits=logits,
            object_logits=object_logits,
            authenticity_loss=authenticity_loss,
            object_loss=object_loss,
            hidden_states=outputs.hidden_states,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _authenticity_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        labels = labels.to(logits.device).long()
        if not (labels != -100).any():
            return None
        return nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100)

    def _object_loss(self, object_logits: torch.Tensor, object_labels: torch.Tensor) -> torch.Tensor | None:
        object_labels = object_labels.to(object_logits.device)
        if self.config.object_problem_type == "single_label_classification":
            return self._authenticity_loss(object_logits, object_labels)
        known = object_labels != -100
        if not known.any():
            return None
        per_entry = nn.functional.binary_cross_entropy_with_logits(
            object_logits.float(), object_labels.float().clamp(0, 1), reduction="none"
        )
        return per_entry[known].mean()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the `auto_map` entry of `AutoModel` ([`DualSightModel`]), the
        `custom_pipelines` entry that lets `pipeline("image-classification", model=..., trust_remote_code=True)` build
        the DualSight pipeline from the saved code (`pipeline.py` is copied beside `modeling.py` as one of its
        imports), and the model's `image_processor` when it has one (a model made by `from_backbone` carries its
        backbone's), so that the folder loads with `load_pipeline` and `AutoImageProcessor` as it is."""
        if self.image_processor is not None and kwargs.get("is_main_process", True):
            self.image_processor.save_pretrained(save_directory)
        # `AutoModel` of the saved folder (remote code) gives the headless model, as the package's registry does
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}),
                                "AutoModel": f"modeling.{DualSightModel.__name__}"}
        self.config.custom_pipelines = {
            "image-classification": {
                "impl": f"pipeline.{DualSightImageClassificationPipeline.__name__}",
                "pt": ["AutoModelForImageClassification"],
                "tf": [],
                "type": "image",
            }
        }
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            # In memory the model stays usable by the installed package's pipeline without remote code.
            del self.config.custom_pipelines


__all__ = [
    "DualSightForImageClassification",
    "DualSightImageClassifierOutput",
    "DualSightModel",
    "DualSightModelOutput",
    "DualSightPreTrainedModel",
    "pooled_feature_size",
]
