"""Does reduced precision change a model's answers? Measure it, and choose the precision `--dtype auto` uses."""

import numpy as np
from sklearn.metrics import roc_auc_score

#: bfloat16 is used only when, on a labelled set, it keeps this share of decisions and this close an AUROC.
MIN_DECISION_AGREEMENT = 0.995
MAX_AUROC_DIFFERENCE = 0.002


def compare_precisions(model_dir, examples, reduced: str = "bfloat16", batch_size: int = 32,
                       calibration: list | None = None) -> dict:
    """
    Score `examples` in float32 and in `reduced` precision and compare the authenticity answers.

    Args:
        model_dir (`str`): the model folder.
        examples (`datasets.Dataset`): labelled images (`image`, `label`), e.g. a validation split.
        reduced (`str`, *optional*, defaults to `"bfloat16"`): `"bfloat16"`, `"float16"` or `"int8"`.
        batch_size (`int`, *optional*, defaults to 32)
        calibration (`list`, *optional*): for `"int8"`: calibration images or folders (see [`Predictor`]); they
            should not overlap `examples`.

    Returns:
        `dict`: `agreement` (share of equal decisions at the model's threshold), `auroc_float32`,
        `auroc_<reduced>`, `auroc_difference`, `max_probability_difference`, `count`.
    """
    from .evaluation import collect_logits
    from .metrics import softmax
    from .predict import Predictor

    labels = np.asarray(examples.with_format(None)["label"])
    scores = {}
    for dtype in ("float32", reduced):
        predictor = Predictor(str(model_dir), batch_size=batch_size, dtype=dtype, num_workers=0,
                              calibration=calibration if dtype == "int8" else None)
        logits = collect_logits(predictor, examples, description=dtype)
        scores[dtype] = softmax(logits / predictor.model.config.temperature)[:, 1]
        threshold = predictor.model.config.decision_threshold or 0.5
    full, low = scores["float32"], scores[reduced]
    aurocs = {dtype: float(roc_auc_score(labels, s)) for dtype, s in scores.items()}
    return {
        "agreement": float(((full >= threshold) == (low >= threshold)).mean()),
        **{f"auroc_{dtype}": value for dtype, value in aurocs.items()},
        "auroc_difference": abs(aurocs["float32"] - aurocs[reduced]),
        "max_probability_difference": float(np.abs(full - low).max()),
        "count": int(len(labels)),
    }


def reduced_precision_is_safe(comparison: dict) -> bool:
    """Whether a `compare_precisions` result meets `MIN_DECISION_AGREEMENT` and `MAX_AUROC_DIFFERENCE`."""
    return comparison["agreement"] >= MIN_DECISION_AGREEMENT and \
        comparison["auroc_difference"] <= MAX_AUROC_DIFFERENCE


def choose_inference_dtype(model_dir, examples) -> dict:
    """
    Measure bfloat16 against float32 on `examples` (a validation split) and store the model's `inference_dtype`:
    `None` (bfloat16 where fast) when it does not change the answers, `"float32"` when it does.

    Returns:
        `dict`: the comparison and the choice.
    """
    from .configuration import DualSightConfig

    comparison = compare_precisions(model_dir, examples)
    config = DualSightConfig.from_pretrained(model_dir)
    config.inference_dtype = None if reduced_precision_is_safe(comparison) else "float32"
    config.save_pretrained(model_dir)
    return {**comparison, "inference_dtype": config.inference_dtype or "bfloat16 where fast"}
