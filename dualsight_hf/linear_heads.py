"""Linear authenticity heads fitted in closed form on frozen features: logistic regression on standardised features,
the scaler folded into the weights, written into a model's `classifier` as the two-class logits `[-z/2, z/2]` (so
that softmax gives sigmoid(z)). The default model's heads are made this way (`scripts/build_clip_model.py`), and
`dualsight adapt --train refit` refits them on a new generator's images and a replay of earlier ones."""

import numpy as np
import torch


def fit_logistic(features: np.ndarray, labels: np.ndarray, c: float,
                 sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """
    `StandardScaler` + `LogisticRegression(C=c)`, folded into one weight vector and bias on the raw features.

    Args:
        features (`np.ndarray` of shape `(n, d)`), labels (`np.ndarray` of shape `(n,)`, 0 or 1)
        c (`float`): inverse regularisation strength, as in scikit-learn.
        sample_weight (`np.ndarray` of shape `(n,)`, *optional*): row weights; scaled to a mean of 1 so that `c`
            means the same as without them.

    Returns:
        `tuple[np.ndarray, float]`: `weight` and `bias` such that `features @ weight + bias` is the fitted logit.

    Example:

    ```python
    >>> import numpy as np
    >>> from dualsight_hf.linear_heads import fit_logistic
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> weight, bias = fit_logistic(x, np.array([0, 0, 1, 1]), c=10.0)
    >>> ((x @ weight + bias) > 0).astype(int).tolist()
    [0, 0, 1, 1]
    ```
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=float) * len(sample_weight) / np.sum(sample_weight)
    scaler = StandardScaler().fit(features, sample_weight=sample_weight)
    regression = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(features), labels,
                                                            sample_weight=sample_weight)
    weight = regression.coef_[0] / scaler.scale_
    return weight, float(regression.intercept_[0] - weight @ scaler.mean_)


def set_authenticity_weights(model, weight: np.ndarray, bias: float) -> None:
    """Write the logit `features @ weight + bias` into `model.classifier` (a two-class `nn.Linear` on the head's
    inputs) as the logits `[-z/2, z/2]`."""
    with torch.no_grad():
        weight = torch.as_tensor(weight, dtype=model.classifier.weight.dtype)
        model.classifier.weight.copy_(torch.stack([-weight / 2, weight / 2]))
        model.classifier.bias.copy_(torch.tensor([-bias / 2, bias / 2], dtype=model.classifier.bias.dtype))


def has_linear_authenticity_head(model) -> bool:
    """Whether the authenticity head is one two-class `nn.Linear` (what [`set_authenticity_weights`] writes)."""
    return isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == 2
