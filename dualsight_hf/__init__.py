"""DualSight HF: tell AI-generated images from real photographs, and name what is in them, as a transformers model.

Importing the package registers `DualSightConfig`, `DualSightModel` (`AutoModel`), `DualSightForImageClassification`
and `DualSightImageProcessor` with transformers' Auto classes and marks them for `save_pretrained` to write
`auto_map` and copy their code, so that a saved folder loads with `trust_remote_code=True` where this package is not
installed.
"""

import logging

# transformers imports torchao (the int8 extra) whenever it is installed, and torchao then logs that its CUDA kernels
# do not load on a CPU build of torch, and torch that it now registers torchao's enums natively: harmless, and not
# the user's concern. Quiet those two loggers, unless the user has set their level.
for _name in ("torchao", "torch.utils._pytree"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.ERROR)

import transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .models.configuration import DualSightConfig
from .models.default_model import DEFAULT_MODEL_DIR, MOBILE_MODEL_DIR, build_default_model, resolve_model
from .models.image_processing import DualSightImageProcessor, image_processor_for_backbone, image_processor_for_model
from .models.images import ImageLoadError, load_image
from .models.loading import ModelLoadError, UnsafeWeightsError, load_image_processor, load_model
from .models.modeling import (
    DualSightForImageClassification,
    DualSightImageClassifierOutput,
    DualSightModel,
    DualSightModelOutput,
    DualSightPreTrainedModel,
)
from .models.pipeline import DualSightImageClassificationPipeline

__version__ = "0.1.0"

AutoConfig.register(DualSightConfig.model_type, DualSightConfig, exist_ok=True)
AutoModel.register(DualSightConfig, DualSightModel, exist_ok=True)
AutoModelForImageClassification.register(DualSightConfig, DualSightForImageClassification, exist_ok=True)
AutoImageProcessor.register(DualSightConfig, image_processor_classes={"pil": DualSightImageProcessor}, exist_ok=True)
DualSightConfig.register_for_auto_class()
DualSightImageProcessor.register_for_auto_class("AutoImageProcessor")
DualSightForImageClassification.register_for_auto_class("AutoModelForImageClassification")
DualSightModel.register_for_auto_class("AutoModel")


def load_pipeline(model=None, allow_pickle: bool = False, **kwargs) -> DualSightImageClassificationPipeline:
    """
    The DualSight `image-classification` pipeline, built from this installed package's code (no remote code runs).

    Args:
        model (`str`, `os.PathLike` or `DualSightForImageClassification`, *optional*):
            A folder, Hub id or model, or `"mobile"` (the bundled MobileNetV2 model); defaults to the default model
            (`DEFAULT_MODEL_DIR`, made once by `dualsight build-model`).
        allow_pickle (`bool`, *optional*, defaults to `False`): accept pickle weights (see `loading.load_model`).
        **kwargs: passed on to `transformers.pipeline` (`device`, `dtype`, `batch_size`, `revision`, ...).

    Returns:
        [`DualSightImageClassificationPipeline`]

    Example:

    ```python
    >>> from dualsight_hf import load_pipeline
    >>> classifier = load_pipeline()  # the default model
    >>> classifier("examples/ai_generated/diffusion_000355.jpg", head="both")["decision"]
    'ai_generated'
    ```
    """
    if not isinstance(model, DualSightPreTrainedModel):
        name = resolve_model(model)
        model = load_model(name, allow_pickle=allow_pickle, revision=kwargs.get("revision"))
        kwargs.setdefault("image_processor", load_image_processor(name, revision=kwargs.get("revision")))
    return transformers.pipeline(
        "image-classification", model=model, pipeline_class=DualSightImageClassificationPipeline, **kwargs
    )


def load_default_pipeline(**kwargs) -> DualSightImageClassificationPipeline:
    """The pipeline of the default model (built by `dualsight build-model`); `kwargs` as in [`load_pipeline`]."""
    return load_pipeline("default", **kwargs)


__all__ = [
    "DEFAULT_MODEL_DIR",
    "MOBILE_MODEL_DIR",
    "build_default_model",
    "resolve_model",
    "DualSightConfig",
    "DualSightForImageClassification",
    "DualSightImageClassificationPipeline",
    "DualSightImageProcessor",
    "DualSightImageClassifierOutput",
    "DualSightModel",
    "DualSightModelOutput",
    "DualSightPreTrainedModel",
    "ImageLoadError",
    "image_processor_for_backbone",
    "image_processor_for_model",
    "load_default_pipeline",
    "load_image",
    "load_image_processor",
    "load_model",
    "ModelLoadError",
    "UnsafeWeightsError",
    "load_pipeline",
]
