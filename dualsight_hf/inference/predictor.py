"""The `Predictor`: from images (files, folders, path lists, datasets, images in memory) to answers, in batches.

Inputs stream through a `torch.utils.data.DataLoader`: worker processes read and preprocess images while the model
runs (on machines with two cores or fewer, threads read each batch between forward passes instead), and the queue
between them is bounded (`prefetch_factor`), so memory does not grow with the number of images. With several
processes (`--num-processes N`, or `accelerate launch` / `torchrun`, read from `RANK` / `WORLD_SIZE`), each takes
every N-th input; writing the results and merging the ranks' shards is `runs`' part.
"""

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ..models.images import ImageLoadError, image_source, iter_image_files, load_image
from ..models.loading import load_image_processor, load_model
from ..models.pipeline import authenticity_decision, authenticity_predictions, object_predictions
from .export import processor_input_size
from .normalization import PixelNormalization
from .onnxruntime_backend import BACKENDS, BackendError, OnnxRuntimeModel
from .provenance import EVIDENCE, Provenance, decide, read_provenance
from .quantization import Int8Model, QuantizationError
from .results import PredictionResult


def resolve_dtype(dtype: str, device: torch.device, model_preference: str | None = None) -> torch.dtype:
    """`"auto"`: the model's `inference_dtype` when it sets one, else bfloat16 on CPUs with AVX512-BF16 or AMX and on
    GPUs that support it, else float32. `"auto"` never picks int8, which needs calibration images."""
    if dtype == "auto" and model_preference:
        dtype = model_preference
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return torch.bfloat16
    return torch.float32


def iter_inputs(paths=(), paths_from: str | None = None, dataset=None, image_column: str = "image",
                dataset_name: str = "dataset"):
    """
    Every input of a run, lazily and in a stable order, as `(key, source)`; `source` is a `Path`, an image or
    bytes from a dataset row, or an `ImageLoadError` for an input that is already known to be bad.

    Args:
        paths (`Iterable[str]`): files and folders (walked recursively).
        paths_from (`str`, *optional*): a text file with one path per line (blank lines and `#` comments skipped).
        dataset (`datasets.Dataset`, *optional*): rows whose `image_column` holds an image.
        image_column (`str`, *optional*, defaults to `"image"`)
        dataset_name (`str`, *optional*): prefix of the keys of dataset rows.
    """
    def from_file():
        with open(paths_from) as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line

    for entry in iter_image_files(paths):
        yield (entry.source if isinstance(entry, ImageLoadError) else str(entry)), entry
    if paths_from:
        for entry in iter_image_files(from_file()):
            yield (entry.source if isinstance(entry, ImageLoadError) else str(entry)), entry
    if dataset is not None:
        for row, record in enumerate(dataset):
            yield f"{dataset_name}:{row}", image_source(record[image_column])


class PreprocessedInputs(IterableDataset):
    """
    Streams `(index, key, model inputs or None, error or None, provenance or None)`: reads and preprocesses each
    input (and, with `provenance`, reads what the file declares about its origin) in the
    DataLoader's worker processes, or, without them, in a pool of threads that works through one chunk of inputs at a
    time between forward passes (image decoding and resizing release the GIL, so the chunk is read on every core while
    the model waits, and the threads do not compete with the model while it runs). Inputs are dealt to ranks and
    workers by position, so every input is read by exactly one of them.

    Args:
        inputs (`Callable[[], Iterable[tuple[str, object]]]`): makes the `(key, source)` stream (see `iter_inputs`).
        prepare (`Callable[[object, str], dict]`): one input's model inputs (`Predictor.prepare`).
        rank (`int`, *optional*, defaults to 0), world_size (`int`, *optional*, defaults to 1): this process's share.
        skip (`set[str]`, *optional*): keys already scored (`--resume`).
        threads (`int`, *optional*, defaults to 1): reading threads of each process.
        chunk (`int`, *optional*, defaults to 1): inputs read together by the threads (the batch size).
        provenance (`bool`, *optional*, defaults to `False`): also read each input's provenance evidence.
        pixels (`bool`, *optional*, defaults to `True`): read the pixels (off: provenance alone).
    """

    def __init__(self, inputs, prepare, rank: int = 0, world_size: int = 1, skip: frozenset = frozenset(),
                 threads: int = 1, chunk: int = 1, provenance: bool = False, pixels: bool = True):
        self.inputs = inputs
        self.prepare = prepare
        self.rank, self.world_size = rank, world_size
        self.skip = skip
        self.threads, self.chunk = threads, chunk
        self.provenance, self.pixels = provenance, pixels

    def __iter__(self):
        mine = self._mine()
        if self.threads <= 1:
            yield from map(self._prepare, mine)
            return
        with ThreadPoolExecutor(self.threads, thread_name_prefix="dualsight-read") as pool:
            while chunk := list(itertools.islice(mine, self.chunk)):
                yield from pool.map(self._prepare, chunk)

    def _mine(self):
        """`(index, key, source)` of the inputs that this rank and worker read."""
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        mine = 0
        for index, (key, source) in enumerate(self.inputs()):
            if index % self.world_size != self.rank:
                continue
            mine += 1
            if (mine - 1) % workers == worker_id and key not in self.skip:
                yield index, key, source

    def _prepare(self, entry) -> tuple:
        index, key, source = entry
        if isinstance(source, ImageLoadError):
            return index, key, None, str(source), None
        evidence = read_provenance(source) if self.provenance else None
        try:
            return index, key, self.prepare(source, key) if self.pixels else None, None, evidence
        except ImageLoadError as error:
            return index, key, None, str(error), None


def _collate(items):
    return items


class Predictor:
    """
    Scores images with both heads of a DualSight model, in batches, in reduced precision where it is fast.

    Args:
        model (`str`, *optional*): a model folder, Hub id or "mobile"; the default model when `None` (see
            `default_model.resolve_model`).
        batch_size (`int`, *optional*, defaults to 16): images per forward pass.
        dtype (`str`, *optional*, defaults to `"auto"`): `"auto"` (see `resolve_dtype`), `"float32"`, `"bfloat16"`,
            `"float16"`, or `"int8"` (static int8 quantization on the CPU, calibrated on `calibration`; see
            `quantization.Int8Model`).
        device (`str`, *optional*): torch device; `cuda` when available, else `cpu`.
        top_k (`int`, *optional*, defaults to 3): object labels per image.
        object_threshold (`float`, *optional*, defaults to 0.5): presence threshold of a multi-label object head.
        allow_pickle (`bool`, *optional*, defaults to `False`): accept pickle weights (see `loading.load_model`).
        num_workers (`int`, *optional*): DataLoader worker processes for reading and preprocessing; defaults to 0
            on machines with 2 cores or fewer (where workers compete with the model; each batch is then read by one
            thread per core between forward passes), else 2.
        compile (`bool`, *optional*, defaults to `False`): `torch.compile` the model with inductor's weight freezing
            (a start of tens of seconds, a faster steady state); int8 models are always compiled.
        uncertain_band (`float`, *optional*): overrides the model's `uncertain_band`: results whose calibrated
            class-1 probability is this close to the decision threshold get the label `"uncertain"`.
        calibration (`list`, *optional*): with `dtype="int8"`: representative images (`PIL.Image.Image`) or files
            and folders of them, of which the first `calibration_size` set the activation ranges.
        calibration_size (`int`, *optional*, defaults to 64): calibration images used.
        evidence (`str`, *optional*, defaults to `"both"`): `"both"` reads each file's provenance beside the pixels
            (a validly signed C2PA claim of AI generation decides; see `provenance.decide`), `"pixels"` the pixels
            only, `"provenance"` the provenance only (the model does not run).
        backend (`str`, *optional*, defaults to `"torch"`): the engine that computes the logits: `"torch"`, or
            `"onnxruntime"` (float32 on the CPU, the model exported once into `$DUALSIGHT_HOME/onnx`; see
            `onnxruntime_backend.OnnxRuntimeModel`). Preprocessing, decisions and errors are the same with both.

    Example:

    ```python
    >>> from dualsight_hf.inference.predictor import Predictor
    >>> predictor = Predictor()  # the default model (or Predictor("mobile"), the bundled MobileNetV2 one)
    >>> results = predictor.predict_paths(["examples"])
    >>> results[0].path, results[0].label
    ('examples/ai_generated/diffusion_000355.jpg', 'ai_generated')
    ```
    """

    def __init__(self, model: str | None = None, batch_size: int = 16, dtype: str = "auto", device: str | None = None,
                 top_k: int = 3, object_threshold: float = 0.5, allow_pickle: bool = False,
                 num_workers: int | None = None, compile: bool = False, uncertain_band: float | None = None,
                 calibration: list | None = None, calibration_size: int = 64, evidence: str = "both",
                 backend: str = "torch"):
        from ..models.default_model import resolve_model

        model = resolve_model(model)
        if evidence not in EVIDENCE:
            raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, not {evidence!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.evidence, self.backend = evidence, backend
        # one GPU per process under accelerate launch / torchrun (LOCAL_RANK), else the first
        self.device = torch.device(device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
                                              if torch.cuda.is_available() and backend == "torch" else "cpu"))
        if dtype == "int8" and self.device.type != "cpu":
            raise QuantizationError(f"--dtype int8 runs on the CPU (oneDNN's x86 int8 kernels), not on {self.device}")
        if backend == "onnxruntime":
            refused = ([f"--dtype {dtype}"] if dtype not in ("auto", "float32") else []) + \
                (["--compile"] if compile else []) + ([f"--device {self.device}"] if self.device.type != "cpu" else [])
            if refused:
                raise BackendError(f"--backend onnxruntime runs float32 on the CPU: not with {', '.join(refused)}")
        if dtype == "int8" and not calibration:
            raise QuantizationError("--dtype int8 needs calibration images (--calibration FOLDER): static "
                                    "quantization measures activation ranges on representative inputs")
        self.model = load_model(model, allow_pickle=allow_pickle).to(self.device).eval()
        self.dtype = torch.float32 if backend == "onnxruntime" else \
            resolve_dtype(dtype, self.device, getattr(self.model.config, "inference_dtype", None))
        self.model = self.model.to(memory_format=torch.channels_last)
        self.image_processor = load_image_processor(model)
        # rescale and normalise once per batch on the device, not per image in numpy
        self.normalization, self._deferred_steps = PixelNormalization.split(self.image_processor)
        self.batch_size = batch_size
        if backend == "onnxruntime":
            self.compiled = OnnxRuntimeModel.from_model(self.model, processor_input_size(self.image_processor))
        elif self.dtype == torch.int8:
            self.compiled = Int8Model.calibrate(self.model, self._calibration_batches(calibration, calibration_size))
        else:
            # freezing folds the weights into the compiled graph as constants (BatchNorm into convolutions, weights
            # pre-packed for oneDNN): safe here since the model only runs in inference mode, and on CPUs it is faster
            self.compiled = torch.compile(self.model, options={"freezing": True}) if compile else self.model
        self.top_k = top_k
        self.object_threshold = object_threshold
        self.uncertain_band = uncertain_band
        self.num_workers = num_workers if num_workers is not None else (0 if (os.cpu_count() or 1) <= 2 else 2)

    def _calibration_batches(self, calibration: list, size: int):
        """Normalised model inputs of the first `size` readable calibration images, in batches of `batch_size`."""
        images = [item for item in calibration if isinstance(item, Image.Image)]
        paths = [item for item in calibration if not isinstance(item, Image.Image)]
        for entry in iter_image_files(paths):
            if len(images) >= size:
                break
            if isinstance(entry, ImageLoadError):
                continue
            try:
                images.append(load_image(entry))
            except ImageLoadError:  # a broken file among the calibration images is skipped, like an unreadable one
                continue
        images = images[:size]
        if not images:
            raise QuantizationError(f"no readable calibration images in {', '.join(map(str, paths)) or 'the list'}")
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            batch += batch[:1] * (self.batch_size - len(batch))  # one batch size: the quantized model compiles once
            yield self._on_device(self.preprocess(batch))

    def preprocess(self, images: list) -> dict[str, torch.Tensor]:
        """
        The model inputs of RGB images (`PIL.Image.Image`): the image processor's output, except that where its
        rescale and normalise steps can be deferred (`self.normalization`) `pixel_values` stay `uint8` after the
        resize and crop, and [`Predictor.forward`] finishes them per batch on the device.
        """
        return dict(self.image_processor(images, return_tensors="pt", **self._deferred_steps))

    def _on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model inputs on the model's device, `uint8` `pixel_values` rescaled and normalised, channels-last."""
        inputs = {name: values.to(self.device) for name, values in inputs.items()}
        if inputs["pixel_values"].dtype == torch.uint8:
            inputs["pixel_values"] = self.normalization(inputs["pixel_values"])
        inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        return inputs

    @torch.inference_mode()
    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Authenticity and object logits (float32, on the CPU) of a batch of model inputs (`pixel_values`, and
        `artifact_values` for a model with an artifact stream), as [`Predictor.preprocess`] or the image processor
        makes them: `uint8` `pixel_values` are rescaled and normalised here."""
        inputs = self._on_device(inputs)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype in (torch.bfloat16, torch.float16)
                    else nullcontext())
        with autocast:
            outputs = self.compiled(**inputs)
        object_logits = outputs.object_logits.float().cpu() if outputs.object_logits is not None else None
        return outputs.logits.float().cpu(), object_logits

    def prepare(self, source, name: str | None = None, max_pixels: int | None = None) -> dict[str, torch.Tensor]:
        """
        One image's model inputs, read and preprocessed as every DualSight entry point does it.

        Args:
            source (`str`, `os.PathLike`, `bytes` or `PIL.Image.Image`): the image (see `images.load_image`).
            name (`str`, *optional*): how to name it in errors.
            max_pixels (`int`, *optional*): the decoding limit (default `images.max_image_pixels()`).

        Returns:
            `dict[str, torch.Tensor]`: inputs without a batch dimension; stack several for [`Predictor.score`].

        Raises:
            `ImageLoadError`: the image cannot be read, with a one-line message.
        """
        processed = self.preprocess([load_image(source, max_pixels=max_pixels, name=name)])
        return {name: values[0] for name, values in processed.items()}

    def model_inputs(self, prepared: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """A batch of prepared images (see [`Predictor.prepare`]) as the model takes it: stacked, on the model's
        device, rescaled and normalised (what [`Predictor.forward`] runs the model on; Grad-CAM reads it too)."""
        return self._on_device({name: torch.stack([item[name] for item in prepared]) for name in prepared[0]})

    def score(self, prepared: list[dict[str, torch.Tensor]], uncertain_band: float | None = None) -> list[dict]:
        """
        Both heads' answers for a batch of prepared images (see [`Predictor.prepare`]), in order: per image a dict
        with `label`, `score`, `authenticity` and `objects`, as `PredictionResult` holds them. `uncertain_band`
        overrides this predictor's for these images.
        """
        return self.answers(*self.forward(self.model_inputs(prepared)), uncertain_band=uncertain_band)

    def answers(self, logits: torch.Tensor, object_logits: torch.Tensor | None,
                uncertain_band: float | None = None) -> list[dict]:
        """Per row of a batch's logits, the decision (`pipeline.authenticity_decision`), every class's probability
        and the object head's top labels."""
        config = self.model.config
        band = uncertain_band if uncertain_band is not None else self.uncertain_band
        scored = []
        for row in range(logits.shape[0]):
            label, score = authenticity_decision(logits[row], config, band)
            objects = (object_predictions(object_logits[row], config, self.top_k, self.object_threshold)
                       if object_logits is not None else [])
            scored.append({"label": label, "score": score, "objects": objects,
                           "authenticity": authenticity_predictions(logits[row], config)})
        return scored

    def batches(self, inputs, bar, rank: int = 0, world_size: int = 1, skip: frozenset = frozenset(),
                provenance: bool = False, num_workers: int | None = None):
        """
        The inference loop over a stream of inputs, behind [`Predictor.stream`] (`predict`) and
        [`Predictor.logits`] (`evaluate`, `calibrate`, `check-precision`, `adapt`): images are read and prepared
        ahead of the model (worker processes, or threads between forward passes), and each batch of them goes
        through [`Predictor.forward`]. Callers that hold their batch already (the service's micro-batches, the
        demo) call [`Predictor.score`]: the same `prepare`, `forward` and decisions ([`Predictor.answers`]).

        Args:
            inputs (`Callable[[], Iterable]`): makes the `(key, source)` stream (see [`PreprocessedInputs`]).
            bar (`tqdm.tqdm`): advanced by the inputs of each batch.
            rank, world_size, skip: as [`Predictor.stream`] takes them.
            provenance (`bool`, *optional*, defaults to `False`): read each file's provenance too.
            num_workers (`int`, *optional*): reading processes; defaults to this predictor's.

        Yields:
            `(items, logits, object_logits)`: the batch's `(index, key, prepared, error, evidence)` entries, and the
            heads' logits of the entries that were read (`prepared` not `None`), in their order; `None` where no
            entry was read.
        """
        num_workers = self.num_workers if num_workers is None else num_workers
        # without worker processes, a batch is read by as many threads as there are cores, between forward passes
        threads = 1 if num_workers else (os.cpu_count() or 1)
        # the model does not run when provenance alone is asked for (`evidence="provenance"`)
        pixels = not (provenance and self.evidence == "provenance")
        dataset = PreprocessedInputs(inputs, self.prepare, rank, world_size, skip, threads, self.batch_size,
                                     provenance=provenance, pixels=pixels)
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=num_workers,
                            collate_fn=_collate, prefetch_factor=2 if num_workers else None)
        for items in loader:
            read = [item[2] for item in items if item[2] is not None]
            yield (items, *(self.forward(self.model_inputs(read)) if read else (None, None)))
            bar.update(len(items))

    def stream(self, inputs, rank: int = 0, world_size: int = 1, skip: frozenset = frozenset(),
               progress: bool = True):
        """
        Score a stream of inputs; yields one `PredictionResult` per input (this rank's share), in input order
        within each batch of worker output.

        Args:
            inputs (`Callable[[], Iterable]`): makes the `(key, source)` stream, e.g.
                `lambda: iter_inputs(["folder/"])`; called once per worker.
            rank, world_size (`int`, *optional*): this process's share of the inputs.
            skip (`frozenset[str]`, *optional*): keys to leave out (already scored).
            progress (`bool`, *optional*, defaults to `True`): a progress bar with images per second.
        """
        with tqdm(desc="predicting", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for items, logits, object_logits in self.batches(inputs, bar, rank, world_size, skip,
                                                             provenance=self.evidence != "pixels"):
                scored = iter(self.answers(logits, object_logits) if logits is not None else ())
                for index, key, pixels, error, evidence in items:
                    if error is not None:
                        yield PredictionResult(path=key, index=index, error=error)
                    else:
                        yield PredictionResult(path=key, index=index,
                                               **self.with_provenance(next(scored) if pixels is not None else {},
                                                                      evidence))

    def logits(self, images, bar=None, description: str = "scoring") -> np.ndarray:
        """
        The authenticity logits (float32, `(len(images), num_labels)`) of `images`, in order, through the same
        loop as `predict` ([`Predictor.batches`]; no provenance, no worker processes: the images may be in memory).

        Args:
            images (`Iterable`): `PIL.Image.Image`s, files or bytes (see `images.load_image`); read once, lazily.
            bar (`tqdm.tqdm`, *optional*): a bar to advance (one shared by several passes); by default one of
                this call's own.
            description (`str`, *optional*, defaults to `"scoring"`): the name of this call's own bar.

        Raises:
            `ImageLoadError`: an image cannot be read (evaluation data is checked beforehand, see
            `sources.drop_unreadable`).
        """
        own_bar = bar is None
        total = len(images) if hasattr(images, "__len__") else None
        bar = tqdm(total=total, desc=description, unit="img", leave=False) if own_bar else bar
        # a file is named by its path in an error, an image in memory by its position
        keyed = lambda: ((str(image) if isinstance(image, (str, os.PathLike)) else f"image {index}", image)  # noqa: E731
                         for index, image in enumerate(images))
        rows = []
        try:
            for items, logits, _ in self.batches(keyed, bar, num_workers=0):
                failed = next((item for item in items if item[3] is not None), None)
                if failed is not None:  # (index, key, prepared, "key: cause", evidence)
                    raise ImageLoadError(failed[1], failed[3].removeprefix(f"{failed[1]}: "))
                rows.append(logits.numpy())
        finally:
            if own_bar:
                bar.close()
        return np.concatenate(rows) if rows else np.zeros((0, self.model.config.num_labels), dtype=np.float32)

    def with_provenance(self, scored: dict, evidence: Provenance | None) -> dict:
        """A result's fields (see [`Predictor.score`]) with the provenance evidence and the decision it leads to
        (`provenance.decide` under this predictor's `evidence` setting)."""
        label, score, decided_by = decide(scored.get("label"), scored.get("score"), evidence, self.evidence)
        provenance = evidence.report(scored.get("label")) if evidence is not None else None
        return {**scored, "label": label, "score": score, "provenance": provenance, "decided_by": decided_by}

    def predict_paths(self, paths, progress: bool = False) -> list[PredictionResult]:
        """
        Score every image in `paths` (files and folders, walked recursively), in input order. A file that cannot be
        read gets a result whose `error` names it and the cause; the rest are scored all the same.
        """
        paths = [str(p) for p in paths]
        results = list(self.stream(lambda: iter_inputs(paths), progress=progress))
        return sorted(results, key=lambda r: r.index)
