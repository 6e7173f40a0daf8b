"""The leave-one-source-out benchmark: what each run trains on, and the table it writes."""

import importlib.util

import pytest
import yaml

from conftest import REPO
from dualsight_hf.data import split_examples
from dualsight_hf.evaluation import leave_one_source_out_markdown
from dualsight_hf.machine import describe_machine


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("loso", REPO / "benchmarks" / "leave_one_source_out.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_hold_out_one_generator_family_each(benchmark, tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "default_model.yaml").read_text())
    assert set(benchmark.DIRECTIONS) == {"ddpm-edit_detect", "diffusiondb-vs-coco,cifake-2spi"}
    for holdout in benchmark.DIRECTIONS:
        semantic, artifact, both = (benchmark.run_settings(recipe, variant, holdout, 3, None, tmp_path)
                                    for variant in ("semantic", "artifact", "both"))
        for settings in (semantic, artifact, both):
            assert settings["holdout_column"] == "source" and settings["holdout_value"] == holdout
            assert settings["num_train_epochs"] == 3 and settings["backbone"] == recipe["backbone"]
            assert settings["split_seed"] == recipe["split_seed"]
        assert "artifact_stream" not in semantic and semantic["objects_file"] == recipe["objects_file"]
        assert artifact["artifact_stream"] == {"semantic_features": False} and artifact["object_labels"] == "none"
        assert "objects_file" not in artifact
        assert both["artifact_stream"] == {} and both["objects_file"] == recipe["objects_file"]


def test_every_source_is_in_exactly_one_direction(benchmark):
    import datasets

    sources = ["diffusiondb-vs-coco", "cifake-2spi", "ddpm-edit_detect"]
    table = datasets.Dataset.from_dict({"label": [0, 1] * 3, "source": [s for s in sources for _ in range(2)],
                                        "image": [str(i) for i in range(6)]})
    held = [set(split_examples(table, stratify_by="source", holdout_column="source", holdout_value=h)["test"]["source"])
            for h in benchmark.DIRECTIONS]
    assert held[0] | held[1] == set(sources) and not held[0] & held[1]


def test_table_and_best_variant():
    def run(auroc):
        return {"test": {"accuracy": 0.5, "auroc": auroc, "count": 4}, "validation_auroc": 0.9,
                "test_by_source": {"a": {"accuracy": 0.5, "auroc": auroc, "count": 2},
                                   "b": {"accuracy": 0.5, "auroc": auroc, "count": 2}}}

    report = {"recipe": "r.yaml", "epochs": 3, "directions": {"x": "X held out", "y": "Y held out"},
              "variants": ["semantic", "both"], "best_variant": "both", "machine": describe_machine(),
              "runs": {"x": {"semantic": run(0.6), "both": run(0.8)}, "y": {"semantic": run(0.7), "both": run(0.5)}}}
    table = leave_one_source_out_markdown(report)
    assert "| **X held out** | 4 | **0.500 / 0.600** | **0.500 / 0.800** |" in table
    assert "| &nbsp;&nbsp;a | 2 | 0.500 / 0.600 | 0.500 / 0.800 |" in table
    assert "| **mean held-out AUROC** | | **0.650** | **0.650** |" in table
