"""`image-classification` pipeline for DualSight models: the stock output for authenticity, plus the object head."""

import os

import numpy as np
import torch
from transformers import ImageClassificationPipeline

from .images import load_image

HEADS = ("authenticity", "objects", "both")


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _ranked(scores: np.ndarray, id2label: dict, top_k: int | None) -> list[dict]:
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [{"label": id2label[int(i)], "score": float(scores[i])} for i in order]


UNCERTAIN = "uncertain"


def authenticity_probabilities(logits, config) -> np.ndarray:
    """Calibrated class probabilities: softmax of the logits divided by `config.temperature`."""
    return _softmax(_as_numpy(logits) / getattr(config, "temperature", 1.0))


def authenticity_predictions(logits, config, top_k: int | None = None) -> list[dict]:
    """
    Authenticity classes with calibrated probabilities (see `authenticity_probabilities`), most likely first.

    Args:
        logits (`np.ndarray` or `torch.Tensor` of shape `(num_labels,)`): one image's authenticity logits.
        config ([`DualSightConfig`]): gives the label names and the temperature.
        top_k (`int`, *optional*): keep the `top_k` best; all when `None`.

    Returns:
        `list[dict]`: `[{"label": str, "score": float}, ...]`.
    """
    return _ranked(authenticity_probabilities(logits, config), config.id2label, top_k)


def decision_threshold(config) -> float:
    """The class-1 probability at or above which a two-class model answers class 1: `config.decision_threshold`,
    0.5 when unset. The one place that default lives."""
    return getattr(config, "decision_threshold", None) or 0.5


def decided_classes(probabilities, config) -> np.ndarray:
    """
    The class each row of calibrated authenticity probabilities is decided as, by the rule of
    [`authenticity_decision`] without its uncertain band: class 1 when its probability reaches
    [`decision_threshold`] (two classes), else the most likely class.

    Args:
        probabilities (`np.ndarray` of shape `(n, num_labels)`)
        config ([`DualSightConfig`])

    Returns:
        `np.ndarray` of shape `(n,)`: class ids.

    Example:

    ```python
    >>> import numpy as np
    >>> from dualsight_hf import DualSightConfig
    >>> from dualsight_hf.models.pipeline import decided_classes
    >>> decided_classes(np.array([[0.6, 0.4], [0.2, 0.8]]), DualSightConfig(decision_threshold=0.3)).tolist()
    [1, 1]
    ```
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape[-1] != 2:
        return probabilities.argmax(-1)
    return (probabilities[..., 1] >= decision_threshold(config)).astype(int)


def authenticity_decision(logits, config, uncertain_band: float | None = None) -> tuple[str, float]:
    """
    The authenticity decision for one image and the probability it rests on.

    Two-class models compare the calibrated probability of class 1 with `config.decision_threshold` (0.5 when
    unset) and answer `"uncertain"` when it lies within `uncertain_band` (default `config.uncertain_band`) of the
    threshold; the score is then the class-1 probability. Models with more classes take the most likely class.

    Returns:
        `tuple[str, float]`: the label (a class name or `"uncertain"`) and its probability.
    """
    probabilities = authenticity_probabilities(logits, config)
    if len(probabilities) != 2:
        best = int(probabilities.argmax())
        return config.id2label[best], float(probabilities[best])
    threshold = decision_threshold(config)
    band = getattr(config, "uncertain_band", 0.0) if uncertain_band is None else uncertain_band
    positive = float(probabilities[1])
    if band > 0 and abs(positive - threshold) < band:
        return UNCERTAIN, positive
    decided = 1 if positive >= threshold else 0
    return config.id2label[decided], float(probabilities[decided])


def object_predictions(object_logits, config, top_k: int | None = 5, threshold: float = 0.5) -> list[dict]:
    """
    Object classes with scores, best first. Multi-label heads give independent sigmoid scores and keep those at or
    above `threshold`; single-label heads give softmax probabilities.

    Args:
        object_logits (`np.ndarray` or `torch.Tensor` of shape `(num_object_labels,)`): one image's object logits.
        config ([`DualSightConfig`]): gives the label names and the object problem type.
        top_k (`int`, *optional*, defaults to 5): keep at most `top_k`; all when `None`.
        threshold (`float`, *optional*, defaults to 0.5): multi-label presence threshold.

    Returns:
        `list[dict]`: `[{"label": str, "score": float}, ...]`.
    """
    values = _as_numpy(object_logits)
    if config.object_problem_type == "multi_label_classification":
        ranked = _ranked(_sigmoid(values), config.object_id2label, None)
        ranked = [item for item in ranked if item["score"] >= threshold]
        return ranked[:top_k] if top_k is not None else ranked
    return _ranked(_softmax(values), config.object_id2label, top_k)


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def read_file_provenance(source):
    """`provenance.read_provenance(source)`, or `None` where the `dualsight_hf` package is not installed (remote code
    alone: the provenance reader is not part of the code a saved folder carries)."""
    try:
        from dualsight_hf.inference.provenance import read_provenance
    except ImportError:
        return None
    return read_provenance(source)


class DualSightImageClassificationPipeline(ImageClassificationPipeline):
    """
    The `image-classification` pipeline for DualSight models.

    By default it returns what the stock pipeline returns, the authenticity classes as `[{"label", "score"}]`, so
    `gradio.Interface.from_pipeline`, the Hub widget and existing code read it unchanged. `head="objects"` returns the
    object head's top classes instead and `head="both"` returns `{"authenticity": [...], "objects": [...]}`.

    Authenticity probabilities are calibrated with the model's `temperature` (see `dualsight calibrate`).

    Call arguments (besides the stock `top_k`, `function_to_apply`, `timeout`, `batch_size`):
        head (`str`, *optional*, defaults to `"authenticity"`): `"authenticity"`, `"objects"` or `"both"`; `"both"`
            also gives the `"decision"` (a class name or `"uncertain"`, see `authenticity_decision`).
        object_threshold (`float`, *optional*, defaults to 0.5): presence threshold of a multi-label object head.
        uncertain_band (`float`, *optional*): overrides the model's `uncertain_band` for the decision.

    With `head="both"` and a file path or bytes, the answer also carries `"provenance"` (what the file declares
    about its origin: C2PA, IPTC, generator metadata; see `dualsight_hf.inference.provenance`) and `"decided_by"`:
    a validly signed C2PA claim of AI generation sets the decision to `"ai_generated"`; nothing in metadata makes it
    `"real"`. (Where the `dualsight_hf` package is not installed, as with remote code alone, the keys are left out.)

    Inputs are file paths, bytes, PIL images or numpy arrays, one or a list; files are read with
    `dualsight_hf.models.images.load_image` (EXIF rotation, transparency, 16-bit, CMYK, animated first frame) and an
    unreadable one raises `ImageLoadError` naming it.

    Example:

    ```python
    >>> from dualsight_hf import load_default_pipeline
    >>> classifier = load_default_pipeline()  # the default model
    >>> classifier("examples/real/chelsea.png")
    [{'label': 'real', 'score': ...}, {'label': 'ai_generated', 'score': ...}]
    >>> answer = classifier("examples/real/chelsea.png", head="both")
    >>> sorted(answer)
    ['authenticity', 'decided_by', 'decision', 'objects', 'provenance']
    >>> answer["decision"], answer["decided_by"], [found["label"] for found in answer["objects"]]
    ('real', 'pixels', ['cat'])
    ```
    """

    def _sanitize_parameters(self, head=None, object_threshold=None, uncertain_band=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if head is not None:
            if head not in HEADS:
                raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
            if head != "authenticity" and not getattr(self.model.config, "num_object_labels", 0):
                raise ValueError(f"head={head!r} needs an object head, and this model has none")
            postprocess_params["head"] = head
            preprocess_params["provenance"] = head == "both"
        if object_threshold is not None:
            postprocess_params["object_threshold"] = float(object_threshold)
        if uncertain_band is not None:
            postprocess_params["uncertain_band"] = float(uncertain_band)
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, image, timeout=None, provenance=False):
        evidence = None
        if isinstance(image, (str, os.PathLike, bytes)) and not str(image).startswith(("http://", "https://")):
            evidence = read_file_provenance(image) if provenance else None
            image = load_image(image)
        model_inputs = super().preprocess(image, timeout=timeout)
        if evidence is not None:
            model_inputs["provenance"] = evidence
        return model_inputs

    def _forward(self, model_inputs):
        evidence = model_inputs.pop("provenance", None)
        model_outputs = super()._forward(model_inputs)
        if evidence is not None:
            model_outputs["provenance"] = evidence
        return model_outputs

    def postprocess(self, model_outputs, function_to_apply=None, top_k=5, head="authenticity", object_threshold=0.5,
                    uncertain_band=None):
        config = self.model.config
        if function_to_apply is not None:  # the caller asked for the stock scoring
            authenticity = super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k)
        else:
            authenticity = authenticity_predictions(model_outputs["logits"][0], config, min(top_k, config.num_labels))
        if head == "authenticity":
            return authenticity
        objects = object_predictions(model_outputs["object_logits"][0], config, top_k, object_threshold)
        if head == "objects":
            return objects
        decision, _ = authenticity_decision(model_outputs["logits"][0], config, uncertain_band)
        answer = {"authenticity": authenticity, "objects": objects, "decision": decision}
        evidence = model_outputs.get("provenance")
        if evidence is not None:  # a file or its bytes: what it declares, and a signed AI claim decides
            answer["decision"], _, answer["decided_by"] = evidence.decide(decision)
            answer["provenance"] = evidence.report(decision)
        return answer
