"""The bundled mobile model (MobileNetV2 + artifact stream, `--model mobile`): it loads offline from the package,
scores the repository's examples as the README says, and its card and the README carry the numbers its own training
run and evaluation measured."""

import json

import pytest
from conftest import REPO

from dualsight_hf import MOBILE_MODEL_DIR, load_pipeline
from dualsight_hf.cli import main
from dualsight_hf.hub import results_markdown


def expected_label(path) -> str:
    return "ai_generated" if path.parent.name == "ai_generated" else "real"


@pytest.fixture(scope="module")
def classifier():
    return load_pipeline("mobile")


def test_the_mobile_model_is_complete_and_safe():
    files = {p.name for p in MOBILE_MODEL_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "all_results.json"} <= files
    assert not any(name.endswith((".bin", ".pth", ".py")) for name in files)  # code: the package (and push)
    config = json.loads((MOBILE_MODEL_DIR / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "mobilenet_v2" and len(config["object_id2label"]) == 20


def test_examples_are_scored_as_the_readme_says(classifier):
    """The AI-generated examples are detected; every example gets a valid decision; and the README's table of the
    example predictions is exactly what the model produces (so the failures on real photos it documents are real)."""
    import io

    from dualsight_hf.inference.predictor import Predictor
    from dualsight_hf.inference.results import write_table

    examples = sorted(p for p in (REPO / "examples").glob("*/*") if p.suffix in (".jpg", ".png"))
    assert len(examples) == 8
    for path in examples:
        result = classifier(str(path), head="both")
        assert result["decision"] in {"real", "ai_generated", "uncertain"}
        assert abs(sum(r["score"] for r in result["authenticity"]) - 1) < 1e-5
        if expected_label(path) == "ai_generated":
            assert result["decision"] == "ai_generated", (path.name, result["authenticity"])
    results = Predictor(str(MOBILE_MODEL_DIR)).predict_paths([REPO / "examples"])
    for item in results:
        item.path = str(item.path).replace(str(REPO) + "/", "")
    table = io.StringIO()
    write_table(results, table)
    readme = (REPO / "README.md").read_text()
    shown = readme.split("<!-- mobile-model-examples:start -->")[1].split("```text\n")[1].split("```")[0]
    assert [line.split()[:2] for line in shown.splitlines()] == \
        [line.split()[:2] for line in table.getvalue().splitlines()]


def test_predict_with_the_mobile_model_prints_both_heads(capsys):
    assert main(["predict", str(REPO / "examples"), "--model", "mobile", "--object-threshold", "0.3"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["path", "label", "score", "provenance", "objects"] and len(lines) == 9


def test_card_and_readme_numbers_come_from_the_run():
    results = json.loads((MOBILE_MODEL_DIR / "all_results.json").read_text())
    card = (MOBILE_MODEL_DIR / "README.md").read_text()
    readme = (REPO / "README.md").read_text()
    block = results_markdown(MOBILE_MODEL_DIR)
    assert block in card and block in readme
    assert f"{results['test']['accuracy']:.4f}" in readme
    report = (MOBILE_MODEL_DIR / "evaluation" / "report.md").read_text()
    assert report in card and report in readme


def test_the_shipped_card_is_the_one_the_package_writes_now():
    """The card is generated (`scripts/package_mobile_model.py`): this package's `build_model_card` gives it back
    word for word, so what it says of the code (the remote-code files, the calls) is current."""
    from conftest import load_benchmark

    from dualsight_hf.hub import build_model_card

    script = load_benchmark("package_mobile_model", "scripts")
    assert str(build_model_card(MOBILE_MODEL_DIR, script.REPO_ID, **script.CARD)) == \
        (MOBILE_MODEL_DIR / "README.md").read_text()


def test_the_repository_holds_no_code_copies_and_the_staged_folder_runs_as_remote_code(tmp_path):
    """The mobile model's folder holds no copies of the package's modules: the folder `dualsight push` stages gets
    the code files from `save_pretrained` (those `remote_code_files` names, as any saved model does), and loads by
    remote code where `dualsight_hf` cannot be imported, with the package's answers."""
    from conftest import assert_same, run_without_package, save_tiny_model

    from dualsight_hf.hub import remote_code_files, stage_repo_folder
    from dualsight_hf.models.default_model import remote_code_paths

    assert not list(MOBILE_MODEL_DIR.glob("*.py"))
    assert sorted(path.name for path in save_tiny_model(tmp_path / "saved").glob("*.py")) == remote_code_files()
    staged = tmp_path / "staged"
    stage_repo_folder(MOBILE_MODEL_DIR, staged, "org/mobile")
    assert sorted(path.name for path in staged.glob("*.py")) == remote_code_files()
    for path in remote_code_paths():
        assert (staged / path.name).read_text() == path.read_text(), path.name
    image = str(REPO / "examples" / "real" / "chelsea.png")
    assert_same(run_without_package(str(staged), image), MOBILE_MODEL_DIR, image)


def test_the_mobile_model_does_not_key_on_size_or_jpeg_quality():
    """Real images made smaller and more compressed than the AI-generated ones, then the other way round: the
    model's AUROC and accuracy on the test split move by at most 0.1 (a model that read size or compression would
    gain in one arrangement what it lost in the other)."""
    from conftest import shared_path

    from dualsight_hf.evaluation.evaluate import EvaluationData, default_device_predictor, shortcut_check

    predictor = default_device_predictor("mobile")
    shared_path("data")
    test = EvaluationData.of_model(MOBILE_MODEL_DIR, "test", root=REPO).load(predictor.model.config)
    check = shortcut_check(predictor, test, progress=False)
    assert check["auroc_gap"] <= 0.1 and check["accuracy_gap"] <= 0.1, check
    for metrics in check["arrangements"].values():
        assert metrics["auroc"] >= 0.8, check
