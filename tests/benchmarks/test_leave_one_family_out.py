"""The leave-one-family-out benchmark: what each run trains on, which variant it picks, and the table it writes."""

import csv

import pytest
import yaml
from conftest import REPO, load_benchmark, shared_path

from dualsight_hf.evaluation.report import leave_one_family_out_markdown
from dualsight_hf.machine import describe_machine


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("leave_one_family_out")


def test_runs_hold_out_one_generator_family_each(benchmark, tmp_path):
    recipe = yaml.safe_load((REPO / "recipes" / "mobile_model.yaml").read_text())
    for family, sources in benchmark.FAMILIES.items():
        limits = {"max_train_samples": 500, "max_validation_samples": None, "max_test_samples": 300}
        plain, balanced, robust = (benchmark.run_settings(recipe, variant, sources, 1, limits, tmp_path)
                                   for variant in ("plain", "balanced", "balanced-robust"))
        for settings in (plain, balanced, robust):
            assert settings["holdout_column"] == "source" and settings["holdout_value"] == sources
            assert settings["num_train_epochs"] == 1 and settings["max_train_samples"] == 500
            assert settings["max_test_samples"] == 300 and "max_validation_samples" not in settings
            assert settings["data"] == recipe["data"] and settings["split_seed"] == recipe["split_seed"]
            assert settings["backbone"] == recipe["backbone"]
        assert "balance_by" not in plain and balanced["balance_by"] == robust["balance_by"] == "source"
        assert robust["blur_p"] > balanced["blur_p"] and robust["jpeg_p"] > balanced["jpeg_p"]
    assert len({benchmark.run_dir_name("plain", family) for family in benchmark.FAMILIES}) == len(benchmark.FAMILIES)


def test_every_shared_source_is_in_exactly_one_family(benchmark):
    """The families cover every source of both shared manifests, each once: no source is trained on while its
    family is held out."""
    sources = set()
    for collection in ("real-vs-ai", "photoreal-multi-generator"):
        with open(shared_path("data", collection, "manifest.csv")) as handle:
            sources |= {row["source"] for row in csv.DictReader(handle)}
    listed = [source for value in benchmark.FAMILIES.values() for source in value.split(",")]
    assert sorted(listed) == sorted(sources)


def run(heldout_auroc, validation_auroc=0.9, balanced_accuracy=0.5):
    metrics = {"accuracy": 0.5, "balanced_accuracy": balanced_accuracy, "auroc": heldout_auroc}
    return {"test": {**metrics, "count": 4}, "validation_auroc": validation_auroc,
            "test_by_source": {"a": {**metrics, "count": 2}, "b": {**metrics, "count": 2}}}


def test_the_default_model_variant_is_the_best_held_out(benchmark):
    """Chosen by the mean held-out AUROC alone (ties broken by held-out balanced accuracy), whatever in-domain says."""
    runs = {"x": {"plain": run(0.4, 0.95), "balanced": run(0.7, 0.80), "balanced-robust": run(0.5, 0.945)},
            "y": {"plain": run(0.4, 0.85), "balanced": run(0.6, 0.60), "balanced-robust": run(0.5, 0.845)}}
    chosen = benchmark.choose_variant(runs)
    assert chosen["chosen_variant"] == "balanced" and chosen["mean_heldout_auroc"]["balanced"] == pytest.approx(0.65)
    assert chosen["mean_in_domain_auroc"]["balanced"] == pytest.approx(0.70)
    tied = {"x": {"plain": run(0.6, balanced_accuracy=0.5), "balanced": run(0.6, balanced_accuracy=0.6)}}
    assert benchmark.choose_variant(tied)["chosen_variant"] == "balanced"


def test_table(benchmark):
    runs = {"x": {"plain": run(0.6), "balanced": run(0.8, balanced_accuracy=0.7)},
            "y": {"plain": run(0.6), "balanced": run(0.5)}}
    report = {"recipe": "r.yaml", "epochs": 1, "limits": {"max_train_samples": 500, "max_test_samples": 300},
              "variants": ["plain", "balanced"],
              "machine": describe_machine(), "runs": runs, **benchmark.choose_variant(runs)}
    table = leave_one_family_out_markdown(report)
    assert "1 epoch(s) per run, at most 500 train images, at most 300 test images" in table
    assert "| **x** | 4 | **0.500 / 0.500 / 0.600** | **0.500 / 0.700 / 0.800** | 0.900 / 0.900 |" in table
    assert "| &nbsp;&nbsp;a | 2 | 0.500 / 0.500 / 0.600 | 0.500 / 0.700 / 0.800 | |" in table
    assert "| **mean held-out balanced accuracy / AUROC** | | **0.500 / 0.600** | **0.600 / 0.650** |" in table
    assert "For the mobile model: **balanced**" in table


def test_readme_and_card_show_the_recorded_table(benchmark):
    """The table in the README and in the default model's card is the one the recorded runs produce, and the
    recipe of the shipped model is the variant that table chose."""
    import json

    from dualsight_hf import MOBILE_MODEL_DIR

    report = json.loads((REPO / "benchmarks" / "results" / "leave_one_family_out.json").read_text())
    table = leave_one_family_out_markdown(report)
    assert table in (REPO / "README.md").read_text()
    assert table in (MOBILE_MODEL_DIR / "README.md").read_text()
    assert set(report["runs"]) == set(benchmark.FAMILIES)
    recipe = yaml.safe_load((REPO / report["recipe"]).read_text())
    chosen = benchmark.VARIANTS[report["chosen_variant"]]
    assert {key: recipe.get(key) for key in chosen} == chosen
