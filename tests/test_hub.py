"""Publishing: the staged repository folder, its generated model card, the upload calls, and loading the staged
folder as a Hub user would (offline cache, no dualsight_hf importable)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same, lay_out_as_hub_download, run_without_package, save_tiny_model
from huggingface_hub import ModelCard

from dualsight_hf.cli import main
from dualsight_hf.evaluation.metrics import authenticity_metrics, grouped_authenticity_metrics
from dualsight_hf.hub import build_model_card, push_model, stage_repo_folder


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny model folder with the files a training run leaves: results (computed here by the metrics code from
    random predictions), a plot, and files that must not be uploaded."""
    folder = save_tiny_model(tmp_path_factory.mktemp("trained"))
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(40, 2)), rng.integers(0, 2, 40)
    sources = np.array(["a", "b"] * 20)
    results = {"test": authenticity_metrics(logits, labels),
               "test_by_source": grouped_authenticity_metrics(logits, labels, sources),
               "split_sizes": {"train": 100, "validation": 40, "test": 40}}
    (folder / "all_results.json").write_text(json.dumps(results))
    from dualsight_hf.evaluation.plots import plot_confusion_matrix

    plot_confusion_matrix(logits, labels, ["real", "ai_generated"], folder / "confusion_matrix.png")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    return folder


def test_dry_run_writes_exactly_the_repository_folder(trained_dir, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["push", str(trained_dir), "org/tiny", "--dry-run", "--out", str(out)]) == 0
    listed = capsys.readouterr().out
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert files == {"README.md", "config.json", "model.safetensors", "preprocessor_config.json",
                     "configuration.py", "modeling.py", "pipeline.py", "images.py", "artifacts.py",
                     "image_processing.py", "all_results.json", "confusion_matrix.png"}
    for name in files:
        assert name in listed
    assert f"{(out / 'model.safetensors').stat().st_size:,d} bytes" in listed
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" in config and "custom_pipelines" in config


def test_dry_run_stages_outside_the_model_and_the_package(trained_dir, capsys):
    """Without --out the dry run stages into a new temporary folder, never beside the model or inside the package."""
    import tempfile

    import dualsight_hf

    assert main(["push", str(trained_dir), "org/tiny", "--dry-run"]) == 0
    staging = Path(capsys.readouterr().out.strip().splitlines()[-1].split(" bytes in ")[1].split(" (dry run")[0])
    try:
        assert staging.is_relative_to(tempfile.gettempdir()) and (staging / "config.json").exists()
        assert not list(trained_dir.parent.glob("hub-staging*"))
        assert not list(Path(dualsight_hf.__file__).parent.glob("hub-staging*"))
    finally:
        shutil.rmtree(staging)


def test_model_card_metadata_and_results_come_from_the_run(trained_dir, tmp_path):
    stage_repo_folder(trained_dir, tmp_path / "repo", "org/tiny", base_model="google/mobilenet_v2_1.0_224",
                      datasets=["Hemg/AI-Generated-vs-Real-Images-Datasets"])
    card = ModelCard.load(tmp_path / "repo" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert data["license"] == "apache-2.0" and data["base_model"] == "google/mobilenet_v2_1.0_224"
    assert data["datasets"] == ["Hemg/AI-Generated-vs-Real-Images-Datasets"]
    assert "dualsight" in data["tags"]
    results = json.loads((trained_dir / "all_results.json").read_text())
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert metrics["auroc"] == pytest.approx(results["test"]["auroc"])
    text = card.text
    assert f"{results['test']['accuracy']:.4f}" in text
    assert f"{results['test_by_source']['b']['auroc']:.4f}" in text
    for label in ("`real`", "`ai_generated`", "`person`", "`car`", "`dog`"):
        assert label in text
    assert "trust_remote_code=True" in text and "revision=" in text and "train.py" in text
    assert "## Limitations" in text and "![Confusion matrix (test split)](confusion_matrix.png)" in text


def test_a_model_made_without_train_py_says_how_it_was_made(tiny_model_dir, tmp_path):
    """A record with `recipe.summary` (e.g. scripts/build_clip_model.py) gets those lines instead of the training
    settings that only train.py records."""
    folder = tmp_path / "built"
    shutil.copytree(tiny_model_dir, folder)
    test = {"accuracy": 0.875, "f1": 0.5, "auroc": 0.9375, "count": 8}
    (folder / "all_results.json").write_text(json.dumps(
        {"test": test, "recipe": {"summary": ["Backbone: frozen", "Heads: fitted on features"]}}))
    text = build_model_card(folder, "org/built").text
    assert "## How it was made\n\n- Backbone: frozen\n- Heads: fitted on features" in text
    assert "## Training" not in text and "0.9375" in text


class RecordingHfApi:
    """Stands in for `huggingface_hub.HfApi` (no Hub is reachable here) and records the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        from pathlib import Path

        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        self.uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())

        class CommitInfo:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123"

        return CommitInfo()


def test_upload_calls(trained_dir, tmp_path):
    api = RecordingHfApi()
    commit = push_model(trained_dir, "org/tiny", tmp_path / "stage", private=True, branch="v1",
                        commit_message="First release", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2] == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert api.calls[1][2] == {"branch": "v1", "exist_ok": True}
    upload = api.calls[2][2]
    assert upload["revision"] == "v1" and upload["commit_message"] == "First release"
    assert "README.md" in api.uploaded and "model.safetensors" in api.uploaded
    assert "training_args.bin" not in api.uploaded and "checkpoint-10" not in api.uploaded
    assert commit.commit_url.endswith("/commit/abc123")


def test_push_prints_the_commit_url(trained_dir, tmp_path, monkeypatch, capsys):
    import dualsight_hf.hub as hub

    api = RecordingHfApi()
    monkeypatch.setattr(hub, "HfApi", lambda token=None: api)
    assert main(["push", str(trained_dir), "org/tiny", "--out", str(tmp_path / "stage")]) == 0
    assert capsys.readouterr().out.strip() == "https://huggingface.co/org/tiny/commit/abc123"
    assert api.calls[0][2]["private"] is False and len(api.calls) == 2  # no branch asked, none created


def test_staged_folder_loads_as_a_hub_user_would(trained_dir, image_dir, tmp_path):
    staged = tmp_path / "repo"
    stage_repo_folder(trained_dir, staged, "dualsight-org/tiny")
    hf_home = tmp_path / "hf-home"
    lay_out_as_hub_download(staged, hf_home, "dualsight-org/tiny")
    image = str(image_dir / "c.png")
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    assert_same(run_without_package("dualsight-org/tiny", image, env), trained_dir, image)
