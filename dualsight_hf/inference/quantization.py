"""Static int8 quantization for fast CPU inference: calibrated on representative images, compiled with inductor.

Post-training quantization with PyTorch's PT2E flow (`torchao`, the x86 inductor quantizer): weights per channel,
activations per tensor with ranges observed on calibration images, then `torch.compile` with weight freezing, which
lowers the quantized convolutions and linear layers to oneDNN's int8 kernels (AVX512-VNNI or AMX). Depthwise
convolutions stay in float32 (see `depthwise_convolutions`). `benchmarks/predict_throughput.py` measures its speed
against bfloat16 and float32.

It changes the arithmetic, so it is opt-in (`dualsight predict --dtype int8 --calibration FOLDER`) and its effect on
the answers is measured, like bfloat16's, with `precision.compare_precisions(..., reduced="int8")`.
"""

import warnings
from collections.abc import Iterable

import torch

from ..models.modeling import DualSightImageClassifierOutput


class QuantizationError(ValueError):
    """int8 quantization cannot run: one line naming what is missing and why."""


class _Logits(torch.nn.Module):
    """The model as a function of its tensor inputs with tensor outputs only, as `torch.export` needs it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, artifact_values: torch.Tensor | None = None):
        outputs = self.model(pixel_values=pixel_values, artifact_values=artifact_values)
        return (outputs.logits,) if outputs.object_logits is None else (outputs.logits, outputs.object_logits)


def depthwise_convolutions(model: torch.nn.Module) -> list[str]:
    """
    Names of the grouped (depthwise) convolutions of `model`, which stay in float32: with one activation scale per
    tensor, int8 loses most of their precision (their channels have very different ranges) and gains little speed
    (they are a small share of the arithmetic). `benchmarks/int8_agreement.py` measures what this keeps.
    """
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Conv2d) and module.groups > 1]


class Int8Model:
    """
    A DualSight model quantized to int8 and compiled for one batch size: batches of other sizes are padded or split
    to it, so it compiles once. Called like the model with keyword inputs; returns
    [`DualSightImageClassifierOutput`] with float32 `logits` and `object_logits`.

    Build one with [`Int8Model.calibrate`].

    Args:
        module (`Callable`): the quantized, compiled module (positional tensor inputs, tuple of logits out).
        batch_size (`int`): the batch size it was compiled for.
        input_names (`tuple[str, ...]`): the model inputs it takes, in order (`pixel_values`, `artifact_values`).

    Example:

    ```python
    >>> import torch
    >>> from transformers import MobileNetV2Config
    >>> from dualsight_hf import DualSightConfig, DualSightForImageClassification
    >>> from dualsight_hf.inference.quantization import Int8Model
    >>> config = DualSightConfig(backbone_config=MobileNetV2Config(image_size=64), num_object_labels=3)
    >>> model = DualSightForImageClassification(config).eval()
    >>> images = [{"pixel_values": torch.randn(4, 3, 64, 64)} for _ in range(2)]
    >>> quantized = Int8Model.calibrate(model, images)
    >>> quantized(pixel_values=torch.randn(3, 3, 64, 64)).logits.shape
    torch.Size([3, 2])
    ```
    """

    def __init__(self, module, batch_size: int, input_names: tuple[str, ...]):
        self.module, self.batch_size, self.input_names = module, batch_size, input_names

    @classmethod
    @torch.no_grad()
    def calibrate(cls, model: torch.nn.Module, calibration: Iterable[dict[str, torch.Tensor]]) -> "Int8Model":
        """
        Quantize `model` (in eval mode, on the CPU) with activation ranges observed on `calibration`.

        Args:
            model (`torch.nn.Module`): a [`DualSightForImageClassification`].
            calibration (`Iterable[dict[str, torch.Tensor]]`): batches of normalised float32 model inputs, all of
                the batch size the quantized model will run at (the first one fixes it and the input names).

        Raises:
            `QuantizationError`: `torchao` is not installed, or `calibration` is empty.
        """
        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
        except ImportError as error:
            raise QuantizationError("int8 needs torchao (pip install 'dualsight-hf[int8]')") from error
        batches = iter(calibration)
        first = next(batches, None)
        if first is None:
            raise QuantizationError("int8 needs at least one batch of calibration images")
        names = tuple(name for name in ("pixel_values", "artifact_values") if name in first)
        example = tuple(first[name].contiguous() for name in names)
        exported = torch.export.export(_Logits(model.eval()), example).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        for name in depthwise_convolutions(model):
            quantizer.set_module_name_qconfig(f"model.{name}", None)
        prepared = prepare_pt2e(exported, quantizer)
        for batch in (first, *batches):
            prepared(*(batch[name].contiguous() for name in names))
        converted = convert_pt2e(prepared)
        return cls(torch.compile(converted), len(first["pixel_values"]), names)

    @torch.no_grad()
    def __call__(self, **inputs: torch.Tensor) -> DualSightImageClassifierOutput:
        count = len(inputs["pixel_values"])
        outputs = []
        for start in range(0, count, self.batch_size):
            batch = [inputs[name][start:start + self.batch_size].float().contiguous() for name in self.input_names]
            size = len(batch[0])
            if size < self.batch_size:  # pad with zeros: rows do not interact in eval mode
                batch = [torch.cat([values, values.new_zeros((self.batch_size - size, *values.shape[1:]))])
                         for values in batch]
            # freezing turns the quantized weights into constants, which lets inductor pre-pack them for oneDNN's
            # int8 kernels (it has to be set in inductor's config while the graph compiles, on the first call);
            # inductor's int8 lowering warns about its own tensor copy while it compiles, nothing a user can act on
            with torch._inductor.config.patch(freezing=True), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
                outputs.append([logits[:size] for logits in self.module(*batch)])
        logits = [torch.cat(parts) for parts in zip(*outputs)]
        return DualSightImageClassifierOutput(logits=logits[0], object_logits=logits[1] if len(logits) > 1 else None)
