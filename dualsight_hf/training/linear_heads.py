"""Linear authenticity heads fitted in closed form on frozen features: logistic regression on standardised features,
the scaler folded into the weights, written into a model's `classifier` as the two-class logits `[-z/2, z/2]` (so
that softmax gives sigmoid(z)). The default model's heads are made this way (`scripts/build_clip_model.py`), and
`dualsight adapt --train refit` refits them on a new generator's images and a replay of earlier ones, pulled
towards the head it starts from ([`fit_logistic_near`]) so that a few hundred rows do not undo what thousands
taught it."""

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
    >>> from dualsight_hf.training.linear_heads import fit_logistic
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


def fit_logistic_near(features: np.ndarray, labels: np.ndarray, c: float, start_weight: np.ndarray,
                      start_bias: float, sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """
    Logistic regression regularised towards a starting head instead of towards zero (L2-SP, Li et al., ICML 2018):
    minimises `c * sum(weight_i * log_loss_i) + 1/2 * sum_j (std_j * (w_j - start_j))^2`, with `std_j` the
    (weighted) standard deviation of feature `j`, i.e. the penalty of [`fit_logistic`] on standardised features,
    centred on the start. Solved by L-BFGS in float64 from the start.

    Args:
        features, labels, c, sample_weight: as in [`fit_logistic`].
        start_weight (`np.ndarray` of shape `(d,)`), start_bias (`float`): the head to stay near, on raw features.

    Returns:
        `tuple[np.ndarray, float]`: `weight` and `bias` on the raw features.

    Example:

    ```python
    >>> import numpy as np
    >>> from dualsight_hf.training.linear_heads import fit_logistic_near
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> weight, bias = fit_logistic_near(x, np.array([0, 0, 1, 1]), c=1e-6, start_weight=np.array([2.0]),
    ...                                  start_bias=-3.0)
    >>> np.round(weight, 3).tolist(), round(bias, 3)  # a vanishing c keeps the start
    ([2.0], -3.0)
    ```
    """
    x = torch.from_numpy(np.asarray(features, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    omega = torch.ones(len(y), dtype=torch.float64) if sample_weight is None else \
        torch.from_numpy(np.asarray(sample_weight, dtype=np.float64))
    omega = omega * len(omega) / omega.sum()
    mean = (omega[:, None] * x).sum(0) / omega.sum()
    std = ((omega[:, None] * (x - mean) ** 2).sum(0) / omega.sum()).sqrt().clamp_min(1e-8)
    start = torch.from_numpy(np.asarray(start_weight, dtype=np.float64))
    weight = start.clone().requires_grad_(True)
    bias = torch.tensor(float(start_bias), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        losses = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y, reduction="none")
        loss = c * (omega * losses).sum() + 0.5 * ((std * (weight - start)) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return weight.detach().numpy(), float(bias.detach())


def authenticity_weights(model) -> tuple[np.ndarray, float]:
    """The logit `z` (class 1 against class 0) of `model`'s two-class linear head as `features @ weight + bias`:
    what [`set_authenticity_weights`] writes, read back from any such head."""
    weight = model.classifier.weight.detach().double()
    bias = model.classifier.bias.detach().double()
    return (weight[1] - weight[0]).numpy(), float(bias[1] - bias[0])


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
