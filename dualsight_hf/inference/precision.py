"""Does reduced precision (or another engine) change a model's answers? Measure it, and choose the precision
`--dtype auto` uses."""

import numpy as np
from sklearn.metrics import roc_auc_score

#: bfloat16 is used only when, on a labelled set, it keeps this share of decisions and this close an AUROC.
MIN_DECISION_AGREEMENT = 0.995
MAX_AUROC_DIFFERENCE = 0.002


def compare_precisions(model_dir, examples, reduced: str = "bfloat16", batch_size: int = 32,
                       calibration: list | None = None, backend: str = "torch") -> dict:
    """
    Score `examples` in float32 with torch and in `reduced` precision with `backend`, and compare the authenticity
    answers.

    Args:
        model_dir (`str`): the model folder.
        examples (`datasets.Dataset`): labelled images (`image`, `label`), e.g. a validation split.
        reduced (`str`, *optional*, defaults to `"bfloat16"`): `"bfloat16"`, `"float16"`, `"int8"`, or
            `"float32"` with another `backend`.
        batch_size (`int`, *optional*, defaults to 32)
        calibration (`list`, *optional*): for `"int8"`: calibration images or folders (see [`Predictor`]); they
            should not overlap `examples`.
        backend (`str`, *optional*, defaults to `"torch"`): the engine of the compared side (see [`Predictor`]).

    Returns:
        `dict`: `agreement` (share of equal decisions at the model's threshold), `auroc_float32`, `auroc_<side>`
        (`<side>` is `reduced` with torch, else the backend's name), `auroc_difference`,
        `max_probability_difference`, `count`.
    """
    from ..evaluation.evaluate import collect_logits
    from ..evaluation.metrics import softmax
    from ..models.pipeline import decided_classes
    from .predictor import Predictor

    labels = np.asarray(examples.with_format(None)["label"])
    side = reduced if backend == "torch" else backend
    if side == "float32":
        raise ValueError("compare float32 with a reduced precision or with another backend, not with itself")
    probabilities = {}
    for name, dtype, engine in (("float32", "float32", "torch"), (side, reduced, backend)):
        predictor = Predictor(str(model_dir), batch_size=batch_size, dtype=dtype, num_workers=0, backend=engine,
                              calibration=calibration if dtype == "int8" else None)
        logits = collect_logits(predictor, examples, description=name)
        probabilities[name] = softmax(logits / predictor.model.config.temperature)
    config = predictor.model.config
    full, low = probabilities["float32"][:, 1], probabilities[side][:, 1]
    aurocs = {name: float(roc_auc_score(labels, p[:, 1])) for name, p in probabilities.items()}
    return {
        "agreement": float((decided_classes(probabilities["float32"], config)
                            == decided_classes(probabilities[side], config)).mean()),
        **{f"auroc_{name}": value for name, value in aurocs.items()},
        "auroc_difference": abs(aurocs["float32"] - aurocs[side]),
        "max_probability_difference": float(np.abs(full - low).max()),
        "count": int(len(labels)),
    }


def reduced_precision_is_safe(comparison: dict) -> bool:
    """Whether a `compare_precisions` result meets `MIN_DECISION_AGREEMENT` and `MAX_AUROC_DIFFERENCE`."""
    return comparison["agreement"] >= MIN_DECISION_AGREEMENT and \
        comparison["auroc_difference"] <= MAX_AUROC_DIFFERENCE


def scoring_speed(model_dir, images: list, dtype: str, repeats: int = 2) -> float:
    """
    Images per second of `Predictor.score` (the forward and both heads, not the decoding) in `dtype` on this
    machine, after one warm-up call.

    Args:
        model_dir (`str`): the model folder.
        images (`list`): images or paths, scored as one batch.
        dtype (`str`): `"float32"` or `"bfloat16"`.
        repeats (`int`, *optional*, defaults to 2): timed calls.
    """
    import time

    from .predictor import Predictor

    predictor = Predictor(str(model_dir), batch_size=len(images), dtype=dtype, num_workers=0, evidence="pixels")
    prepared = [predictor.prepare(image) for image in images]
    predictor.score(prepared)
    began = time.perf_counter()
    for _ in range(repeats):
        predictor.score(prepared)
    return repeats * len(images) / (time.perf_counter() - began)


def choose_inference_dtype(model_dir, examples, speed_images: int = 16) -> dict:
    """
    Choose and store the model's `inference_dtype`, the precision `--dtype auto` uses: `None` (bfloat16 where the
    hardware has it) only when bfloat16 is faster than float32 on this machine and, measured on `examples` (a
    validation split), does not change the answers; else `"float32"`.

    Speed is measured first, on `speed_images` of the examples: where bfloat16 is not faster (as for ViT backbones
    on CPUs with AVX512-BF16 but no AMX, where autocast is several times slower), its answers are not measured.

    Returns:
        `dict`: the speeds (`images_per_second`), the comparison (see [`compare_precisions`]) where it was measured,
        and the choice (`inference_dtype`).
    """
    from ..machine import describe_machine, machine_line
    from ..models.configuration import DualSightConfig

    images = examples.with_format(None).select(range(min(speed_images, len(examples))))["image"]
    speeds = {dtype: scoring_speed(model_dir, images, dtype) for dtype in ("float32", "bfloat16")}
    measured = {"images_per_second": speeds, "speed_machine": machine_line(describe_machine())}
    config = DualSightConfig.from_pretrained(model_dir)
    if speeds["bfloat16"] <= speeds["float32"]:
        config.inference_dtype = "float32"
    else:
        measured.update(compare_precisions(model_dir, examples))
        config.inference_dtype = None if reduced_precision_is_safe(measured) else "float32"
    config.save_pretrained(model_dir)
    return {**measured, "inference_dtype": config.inference_dtype or "bfloat16 where fast"}
