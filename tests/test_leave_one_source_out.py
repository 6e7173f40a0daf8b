"""The leave-one-source-out benchmark: what each run trains on, and the table it writes."""

import pytest
import yaml

from conftest import REPO, load_benchmark
from dualsight_hf.data import split_examples
from dualsight_hf.evaluation import leave_one_source_out_markdown
from dualsight_hf.machine import describe_machine


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("leave_one_source_out")


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


def run(heldout_auroc, validation_auroc=0.9):
    return {"test": {"accuracy": 0.5, "auroc": heldout_auroc, "count": 4}, "validation_auroc": validation_auroc,
            "test_by_source": {"a": {"accuracy": 0.5, "auroc": heldout_auroc, "count": 2},
                               "b": {"accuracy": 0.5, "auroc": heldout_auroc, "count": 2}}}


def test_the_default_model_variant_must_not_lose_in_domain(benchmark):
    runs = {"x": {"semantic": run(0.4, 0.95), "artifact": run(0.7, 0.80), "both": run(0.5, 0.96)},
            "y": {"semantic": run(0.4, 0.85), "artifact": run(0.6, 0.60), "both": run(0.5, 0.84)}}
    chosen = benchmark.choose_variant(runs)
    assert chosen["best_variant"] == "artifact"  # best held out, but far worse in-domain
    assert chosen["chosen_variant"] == "both"  # in-domain mean 0.90 = semantic's
    assert chosen["mean_heldout_auroc"]["both"] == pytest.approx(0.5)


def test_table(benchmark):
    runs = {"x": {"semantic": run(0.6), "both": run(0.8)}, "y": {"semantic": run(0.6), "both": run(0.5)}}
    report = {"recipe": "r.yaml", "epochs": 3, "directions": {"x": "X held out", "y": "Y held out"},
              "variants": ["semantic", "both"], "machine": describe_machine(), "runs": runs,
              **benchmark.choose_variant(runs)}
    table = leave_one_source_out_markdown(report)
    assert "| **X held out** | 4 | **0.500 / 0.600** | **0.500 / 0.800** |" in table
    assert "| &nbsp;&nbsp;a | 2 | 0.500 / 0.600 | 0.500 / 0.800 |" in table
    assert "| **mean held-out AUROC** | | **0.600** | **0.650** |" in table
    assert "For the default model: **both**" in table
