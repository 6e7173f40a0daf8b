"""Loading models and their image processors safely: safetensors weights only, unless the caller opts in to pickle
files; the PIL backend for processors (no torchvision); one-line errors."""

from pathlib import Path

from transformers import AutoImageProcessor, AutoModelForImageClassification
from transformers.image_processing_utils import BaseImageProcessor

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (transformers' and datasets' run over several), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ModelLoadError(OSError):
    """A model cannot be loaded; `str(error)` is one line naming the model and the cause."""


class UnsafeWeightsError(ModelLoadError):
    """A model offers only pickle weights (which can run code when loaded) and pickle was not allowed."""


def load_model(name_or_path: str, allow_pickle: bool = False, **kwargs):
    """
    `AutoModelForImageClassification.from_pretrained`, refusing pickle weights unless `allow_pickle=True`.

    Args:
        name_or_path (`str`): model folder or Hub id.
        allow_pickle (`bool`, *optional*, defaults to `False`): also accept `.bin` / `.pth` weights (a pickle file
            can run code when loaded; transformers then reads it with `torch.load(weights_only=True)`).
            On the command line: `--allow-pickle`.
        **kwargs: passed on to `from_pretrained` (`revision`, `trust_remote_code`, `dtype`, ...).

    Raises:
        `UnsafeWeightsError`: a folder or repository with only pickle weights, when `allow_pickle` is off.
        `ModelLoadError`: any other reason the model cannot be loaded (no such folder, Hub unreachable, ...).
    """
    folder = Path(name_or_path)
    if not folder.exists() and (folder.is_absolute() or str(name_or_path).startswith((".", "~"))):
        raise ModelLoadError(f"{name_or_path}: no such model folder")
    if not allow_pickle and folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeWeightsError(
                f"{name_or_path}: only pickle weights ({', '.join(pickles)}), which can run code when loaded; "
                "convert them to safetensors, or pass allow_pickle=True (--allow-pickle) if you trust the source"
            )
    try:
        return AutoModelForImageClassification.from_pretrained(
            name_or_path, use_safetensors=None if allow_pickle else True, **kwargs
        )
    except OSError as error:
        if not allow_pickle and not folder.is_dir() and "safetensors" in str(error).lower():
            raise UnsafeWeightsError(
                f"{name_or_path}: no safetensors weights found; pass allow_pickle=True (--allow-pickle) to accept "
                "pickle weights if you trust the source"
            ) from error
        raise ModelLoadError(f"{name_or_path}: cannot load the model ({first_line(error)})") from error


def load_image_processor(name_or_path: str, **kwargs) -> BaseImageProcessor:
    """`AutoImageProcessor.from_pretrained` with the PIL backend, which needs no torchvision.

    Args:
        name_or_path (`str`): Hub id or folder of a model with a `preprocessor_config.json`.
        **kwargs: passed on to `AutoImageProcessor.from_pretrained` (`revision`, `trust_remote_code`, ...).

    Raises:
        `ModelLoadError`: with one line naming the model and the cause.
    """
    kwargs.setdefault("backend", "pil")
    folder = Path(name_or_path)
    if folder.is_dir() and (folder / "config.json").exists() and not (folder / "preprocessor_config.json").exists():
        raise ModelLoadError(f"{name_or_path}: no preprocessor_config.json; save the model's image processor beside "
                             f"it: image_processor_for_model(model.config).save_pretrained('{name_or_path}')")
    try:
        return AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        raise ModelLoadError(f"{name_or_path}: cannot load the image processor ({first_line(error)})") from error
