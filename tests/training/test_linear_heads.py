"""Linear heads fitted in closed form: the folded weights are scikit-learn's fit, with row weights, and the model's
two-class head gives its probabilities."""

import numpy as np
import pytest
import torch
from conftest import save_tiny_model

from dualsight_hf.models.loading import load_model
from dualsight_hf.training.linear_heads import (
    authenticity_weights,
    fit_logistic,
    fit_logistic_near,
    has_linear_authenticity_head,
    set_authenticity_weights,
)


def data(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, (n, 6)) * rng.uniform(0.5, 4.0, 6)
    y = (x[:, 0] / x[:, 0].std() - x[:, 2] / x[:, 2].std() + rng.normal(0, 0.8, n) > 0).astype(int)
    return x, y


def test_the_folded_fit_is_the_weighted_pipeline_fit():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = data()
    weights = np.where(np.arange(len(y)) < 20, 3.0, 1.0)
    weight, bias = fit_logistic(x, y, c=0.5, sample_weight=weights)
    scaled = weights * len(weights) / weights.sum()
    scaler = StandardScaler().fit(x, sample_weight=scaled)
    reference = LogisticRegression(C=0.5, max_iter=5000).fit(scaler.transform(x), y, sample_weight=scaled)
    assert np.allclose(x @ weight + bias, reference.decision_function(scaler.transform(x)), atol=1e-6)
    # weights only count relative to each other
    again = fit_logistic(x, y, c=0.5, sample_weight=10 * weights)
    assert np.allclose(again[0], weight) and again[1] == pytest.approx(bias)


def test_the_model_head_gives_the_fitted_probabilities(tmp_path):
    model = load_model(str(save_tiny_model(tmp_path / "model")))
    assert has_linear_authenticity_head(model)
    width = model.classifier.in_features
    x, y = data(40)
    x = np.concatenate([x, np.zeros((40, width - x.shape[1]))], axis=1)
    weight, bias = fit_logistic(x[:, :6], y, c=1.0)
    set_authenticity_weights(model, np.concatenate([weight, np.zeros(width - 6)]), bias)
    with torch.no_grad():
        probability = model.classifier(torch.from_numpy(x).float()).softmax(-1)[:, 1].numpy()
    assert np.allclose(probability, 1 / (1 + np.exp(-(x[:, :6] @ weight + bias))), atol=1e-5)
    mlp = load_model(str(save_tiny_model(tmp_path / "mlp", authenticity_head={"hidden_sizes": [8]})))
    assert not has_linear_authenticity_head(mlp)


def test_the_refit_near_a_start_moves_from_it_as_the_data_ask_and_reads_back_from_the_model(tmp_path):
    x, y = data()
    free_weight, free_bias = fit_logistic(x, y, c=0.5)
    start = -free_weight  # a head that ranks this data backwards
    # a vanishing strength keeps the start; a large one reaches the unregularised fit's ranking
    kept, kept_bias = fit_logistic_near(x, y, 1e-9, start, 0.3)
    assert np.allclose(kept, start, atol=1e-6) and kept_bias == pytest.approx(0.3, abs=1e-6)
    moved, moved_bias = fit_logistic_near(x, y, 100.0, start, 0.3)
    accuracy = (((x @ moved + moved_bias) > 0) == y).mean()
    assert accuracy >= (((x @ free_weight + free_bias) > 0) == y).mean() - 0.05
    # with the start at zero the objective is fit_logistic's: the same head
    zero, zero_bias = fit_logistic_near(x, y, 0.5, np.zeros(6), 0.0)
    assert np.allclose(x @ zero + zero_bias, x @ free_weight + free_bias, atol=1e-2)  # scikit-learn stops at 1e-4
    model = load_model(str(save_tiny_model(tmp_path / "model")))
    width = model.classifier.in_features
    set_authenticity_weights(model, np.arange(width, dtype=float), -1.5)
    weight, bias = authenticity_weights(model)
    assert np.allclose(weight, np.arange(width)) and bias == pytest.approx(-1.5)
