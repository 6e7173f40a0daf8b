"""Batch prediction over files and folders: the engine behind `dualsight predict`."""

import csv
import json
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from .images import ImageLoadError, iter_image_files, load_image
from .loading import load_model
from .pipeline import authenticity_predictions, object_predictions
from .processing import load_image_processor


@dataclass
class PredictionResult:
    """
    What `dualsight predict` says about one input.

    Args:
        path (`str`): the input as given or found.
        label (`str`, *optional*): the most likely authenticity class.
        score (`float`, *optional*): its probability.
        authenticity (`list[dict]`): every authenticity class with its probability, best first.
        objects (`list[dict]`): the object head's top classes with scores (empty without an object head).
        error (`str`, *optional*): the one-line reason when the input could not be scored; the other fields are
            then empty.
    """

    path: str
    label: str | None = None
    score: float | None = None
    authenticity: list = field(default_factory=list)
    objects: list = field(default_factory=list)
    error: str | None = None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`"auto"`: bfloat16 on CPUs with AVX512-BF16 or AMX and on GPUs that support it, else float32."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return torch.bfloat16
    return torch.float32


class Predictor:
    """
    Scores images with both heads of a DualSight model, in batches, in reduced precision where it is fast.

    Args:
        model (`str`, *optional*): model folder or Hub id; the shipped default model when `None`.
        batch_size (`int`, *optional*, defaults to 16): images per forward pass.
        dtype (`str`, *optional*, defaults to `"auto"`): `"auto"`, `"float32"`, `"bfloat16"` or `"float16"`.
        device (`str`, *optional*): torch device; `cuda` when available, else `cpu`.
        top_k (`int`, *optional*, defaults to 3): object labels per image.
        object_threshold (`float`, *optional*, defaults to 0.5): presence threshold of a multi-label object head.
        allow_pickle (`bool`, *optional*, defaults to `False`): accept pickle weights (see `loading.load_model`).

    Example:

    ```python
    >>> from dualsight_hf.predict import Predictor
    >>> predictor = Predictor()  # the shipped default model
    >>> results = predictor.predict_paths(["examples"])  # doctest: +SKIP
    >>> results[0].label, results[0].objects  # doctest: +SKIP
    ```
    """

    def __init__(self, model: str | None = None, batch_size: int = 16, dtype: str = "auto", device: str | None = None,
                 top_k: int = 3, object_threshold: float = 0.5, allow_pickle: bool = False):
        from . import DEFAULT_MODEL_DIR

        model = str(model or DEFAULT_MODEL_DIR)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = load_model(model, allow_pickle=allow_pickle).to(self.device).eval()
        self.model = self.model.to(memory_format=torch.channels_last)
        self.image_processor = load_image_processor(model)
        self.batch_size = batch_size
        self.top_k = top_k
        self.object_threshold = object_threshold

    @torch.inference_mode()
    def predict_images(self, images: list) -> list[PredictionResult]:
        """Score already loaded RGB images (`PIL.Image.Image`); results in input order, `path` left empty."""
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(self.device).contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                    else nullcontext())
        with autocast:
            outputs = self.model(pixel_values=pixel_values)
        config = self.model.config
        results = []
        for index in range(len(images)):
            authenticity = authenticity_predictions(outputs.logits[index], config)
            objects = (object_predictions(outputs.object_logits[index], config, self.top_k, self.object_threshold)
                       if outputs.object_logits is not None else [])
            results.append(PredictionResult(path="", label=authenticity[0]["label"], score=authenticity[0]["score"],
                                            authenticity=authenticity, objects=objects))
        return results

    def predict_paths(self, paths, progress: bool = True) -> list[PredictionResult]:
        """
        Score every image in `paths` (files and folders, walked recursively). A file that cannot be read gets a
        result whose `error` names it and the cause; the rest of the batch is scored all the same.
        """
        entries = list(iter_image_files(paths))
        results: list[PredictionResult] = []
        pending: list[tuple[str, object]] = []
        bar = tqdm(total=len(entries), desc="predicting", unit="img", disable=not progress)

        def flush():
            if pending:
                scored = self.predict_images([image for _, image in pending])
                for (path, _), result in zip(pending, scored):
                    result.path = path
                    results.append(result)
                bar.update(len(pending))
                pending.clear()

        for entry in entries:
            if isinstance(entry, ImageLoadError):
                results.append(PredictionResult(path=entry.source, error=str(entry)))
                bar.update(1)
                continue
            try:
                pending.append((str(entry), load_image(entry)))
            except ImageLoadError as error:
                results.append(PredictionResult(path=str(entry), error=str(error)))
                bar.update(1)
            if len(pending) >= self.batch_size:
                flush()
        flush()
        bar.close()
        order = {str(entry.source if isinstance(entry, ImageLoadError) else entry): i for i, entry in enumerate(entries)}
        return sorted(results, key=lambda r: order.get(r.path, len(order)))


def write_results(results: list[PredictionResult], handle, output_format: str = "table") -> None:
    """
    Write prediction results as an aligned `table`, a `json` array, or `csv` (one row per image: path, label,
    score, objects as `name:score;...`, error).
    """
    if output_format == "json":
        json.dump([asdict(r) for r in results], handle, indent=2)
        handle.write("\n")
        return
    rows = [(r.path, r.label or "", "" if r.score is None else f"{r.score:.4f}",
             "; ".join(f"{o['label']}:{o['score']:.2f}" for o in r.objects), r.error or "") for r in results]
    header = ("path", "label", "score", "objects", "error")
    if output_format == "csv":
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
        return
    shown = [(os.path.relpath(p) if p and os.path.isabs(p) else p, *rest) for p, *rest in rows]
    widths = [max(len(str(row[i])) for row in [header, *shown]) for i in range(4)]
    for row in [header, *shown]:
        cells = [str(cell).ljust(width) for cell, width in zip(row[:4], widths)]
        line = "  ".join(cells).rstrip()
        handle.write((line + ("  ERROR " + row[4] if row[4] else "")).rstrip() + "\n")
