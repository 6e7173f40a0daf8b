"""The golden check: `dualsight predict --format json` answers as recorded in tests/scripts/golden_predictions.json
(re-record with `python scripts/golden_predictions.py write ...` after a change meant to move the answers)."""

import copy
import json

from conftest import REPO, load_benchmark, require_default_model, shared_path

RECORD = REPO / "tests" / "scripts" / "golden_predictions.json"


def test_predict_answers_as_recorded_for_the_default_and_mobile_models(monkeypatch):
    golden = load_benchmark("golden_predictions", "scripts")
    for name in golden.MANIFESTS:
        shared_path("data", name, "manifest.csv")
    require_default_model()
    monkeypatch.chdir(REPO)
    record = json.loads(RECORD.read_text())
    assert record["images"] == golden.golden_images()
    assert set(record["results"]) == {"default", "mobile"}
    for model, expected in record["results"].items():
        assert golden.differences(expected, golden.predict_json(model, record["images"]), golden.atol_for(record)) == []


def test_differences_names_a_changed_label_and_a_moved_probability():
    golden = load_benchmark("golden_predictions", "scripts")
    before = [{"path": "a.jpg", "label": "real", "score": 0.7,
               "authenticity": [{"label": "real", "score": 0.7}, {"label": "ai_generated", "score": 0.3}],
               "objects": [{"label": "dog", "score": 0.9}]}]
    after = copy.deepcopy(before)
    assert golden.differences(before, after, 1e-6) == []
    after[0]["objects"][0]["score"] = 0.9 + 2e-6
    assert golden.differences(before, after, 1e-6) == ["a.jpg: objects[dog] 0.90000000 -> 0.90000200"]
    after[0].update(label="ai_generated", score=0.4)
    assert golden.differences(before, after, 1e-6)[:2] == ["a.jpg: label real -> ai_generated",
                                                            "a.jpg: score 0.70000000 -> 0.40000000"]
    assert golden.differences(before, [], 1e-6) == ["the results name other images, or in another order"]
