"""Few-shot adaptation on tiny data: a new family is learned, an earlier one kept; the refusals; the adapted folder
is an ordinary model (remote code, card)."""

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import run_without_package, save_tiny_model
from PIL import Image

from dualsight_hf.cli import main
from dualsight_hf.training.adaptation import AdaptationError, adapt


def tinted(folder, count: int, colour: tuple, seed: int) -> str:
    """`count` noisy 32x32 images around `colour`: one visual family."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        noise = rng.normal(0, 40, (32, 32, 3))
        Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Two families: the old one (red fakes vs green photos) and a new generator (blue fakes vs yellow photos), which
    the model taught the old one ranks backwards."""
    root = tmp_path_factory.mktemp("families")
    return {"old": {"fake": tinted(root / "old-fake", 24, (200, 60, 60), 0),
                    "real": tinted(root / "old-real", 24, (60, 200, 60), 1)},
            "new": {"fake": tinted(root / "new-fake", 24, (60, 60, 220), 2),
                    "real": tinted(root / "new-real", 24, (220, 220, 60), 3)}}


def manifest(path, family: dict) -> str:
    rows = [f"{image},{label}" for label, folder in (("ai_generated", family["fake"]), ("real", family["real"]))
            for image in sorted(Path(folder).glob("*.png"))]
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def knows_the_old_family(families, tmp_path_factory):
    """A tiny model taught the old family (by adaptation itself, without replay)."""
    root = tmp_path_factory.mktemp("base")
    base = save_tiny_model(root / "random", seed=3)
    out = root / "old"
    adapt(str(base), [families["old"]["fake"]], [families["old"]["real"]], str(out), shots=None, epochs=30,
          learning_rate=3e-3, progress=False)
    return out


def test_adaptation_learns_the_new_family_and_keeps_the_old(families, knows_the_old_family, tmp_path):
    old_manifest = manifest(tmp_path / "old.csv", families["old"])
    report = adapt(str(knows_the_old_family), [families["new"]["fake"]], [families["new"]["real"]],
                   str(tmp_path / "adapted"), shots=12, replay=[old_manifest], replay_check_size=8, epochs=30,
                   learning_rate=1e-2, progress=False)
    assert report.shots == {"ai_generated": 12, "real": 12} and report.held_back == {"ai_generated": 6, "real": 6}
    assert report.after["auroc"] >= 0.95 and report.after["auroc"] > report.before["auroc"]
    assert report.after["balanced_accuracy"] > report.before["balanced_accuracy"]
    # the old family, measured on all its images with the adapted model, is still told apart
    from dualsight_hf.data.sources import encode_labels, load_examples
    from dualsight_hf.models.loading import load_model
    from dualsight_hf.training.adaptation import measure

    old = encode_labels(load_examples([old_manifest]), load_model(str(tmp_path / "adapted")).config)
    kept, _ = measure(str(tmp_path / "adapted"), old, None)
    before, _ = measure(str(knows_the_old_family), old, None)
    assert kept["auroc"] >= before["auroc"] - 0.05 and kept["auroc"] >= 0.9
    assert report.false_positive_rate["after"] is not None and report.replay_check == 8


def test_refit_learns_the_new_family_and_keeps_the_old_without_training_steps(families, knows_the_old_family,
                                                                              tmp_path):
    """`refit` (the default model's way): the linear head refitted in closed form on the shots and the replay."""
    from dualsight_hf.data.sources import encode_labels, load_examples
    from dualsight_hf.models.loading import load_model
    from dualsight_hf.training.adaptation import measure

    old_manifest = manifest(tmp_path / "old.csv", families["old"])
    report = adapt(str(knows_the_old_family), [families["new"]["fake"]], [families["new"]["real"]],
                   str(tmp_path / "refit"), shots=12, replay=[old_manifest], replay_check_size=8, part="refit",
                   progress=False)
    assert report.part == "refit" and report.after["auroc"] >= 0.95 and report.before["auroc"] < 0.5
    old = encode_labels(load_examples([old_manifest]), load_model(str(tmp_path / "refit")).config)
    assert measure(str(tmp_path / "refit"), old, None)[0]["auroc"] >= 0.9
    base, refitted = load_model(str(knows_the_old_family)), load_model(str(tmp_path / "refit"))
    for name, value in base.state_dict().items():  # only the authenticity head changed
        assert value.equal(refitted.state_dict()[name]) != name.startswith("classifier."), name


def test_refit_needs_a_linear_head(families, tmp_path):
    mlp = save_tiny_model(tmp_path / "mlp", authenticity_head={"hidden_sizes": [8]})
    with pytest.raises(AdaptationError, match="needs a two-class linear authenticity head"):
        adapt(str(mlp), [families["new"]["fake"]], [families["new"]["real"]], str(tmp_path / "x"), part="refit")


def test_adapted_folder_is_an_ordinary_model(families, knows_the_old_family, tmp_path):
    out = tmp_path / "adapted"
    report = adapt(str(knows_the_old_family), [families["new"]["fake"]], [families["new"]["real"]], str(out),
                   shots=8, epochs=2, progress=False)
    recorded = json.loads((out / "adaptation.json").read_text())
    assert recorded["shots"] == report.shots and recorded["part"] == "head"
    card = (out / "README.md").read_text()
    assert "## Adaptation" in card and f"{report.after['auroc']:.3f}" in card
    assert any("no replay data" in warning for warning in report.warnings)
    remote = run_without_package(str(out), str(Path(families["new"]["fake"]) / "0.png"))
    assert remote["model_class"] == "DualSightForImageClassification"
    assert json.loads((out / "config.json").read_text())["freeze_backbone"] is False


@pytest.mark.parametrize("part", ["head+artifacts", "head+last-stage"])
def test_other_parts_train_only_what_they_name(families, knows_the_old_family, tmp_path, part):
    from dualsight_hf.training.adaptation import trainable_model

    model = trainable_model(str(knows_the_old_family), part)
    trainable = {name.removeprefix("dualsight.").split(".")[0] for name, p in model.named_parameters()
                 if p.requires_grad}
    assert trainable == ({"classifier", "backbone"} if part == "head+last-stage" else {"classifier"} |
                         ({"artifact_encoder"} if model.dualsight.artifact_encoder is not None else set()))
    frozen_norms = [m for m in model.train().modules() if "BatchNorm" in type(m).__name__
                    and not any(p.requires_grad for p in m.parameters())]
    assert frozen_norms and not any(m.training for m in frozen_norms)  # their statistics stay as they were


def test_refusals(families, knows_the_old_family, tmp_path):
    few = tinted(tmp_path / "few", 3, (0, 0, 0), 9)
    with pytest.raises(AdaptationError, match="--fake holds 3 images; adaptation needs at least 8"):
        adapt(str(knows_the_old_family), [few], [families["new"]["real"]], str(tmp_path / "x"))
    with pytest.raises(AdaptationError, match="no such folder, manifest"):
        adapt(str(knows_the_old_family), [str(tmp_path / "absent")], [families["new"]["real"]], str(tmp_path / "x"))
    with pytest.raises(AdaptationError, match="--train must be one of"):
        adapt(str(knows_the_old_family), [families["new"]["fake"]], [families["new"]["real"]], str(tmp_path / "x"),
              part="everything")
    three = save_tiny_model(tmp_path / "three", id2label={0: "real", 1: "dalle", 2: "other_ai"})
    with pytest.raises(AdaptationError, match="two-class model with a 'real' class"):
        adapt(str(three), [families["new"]["fake"]], [families["new"]["real"]], str(tmp_path / "x"))


def test_cli_refusal_is_one_line(capsys, families, knows_the_old_family, tmp_path):
    few = tinted(tmp_path / "few", 2, (0, 0, 0), 9)
    with pytest.raises(SystemExit) as exited:
        main(["adapt", "--model", str(knows_the_old_family), "--fake", few, "--real", families["new"]["real"],
              "--out", str(tmp_path / "x"), "--replay"])
    assert str(exited.value) == "dualsight: error: --fake holds 2 images; adaptation needs at least 8 per class " \
                                "(a part is held back to measure the result)"


def test_adapt_from_the_service_history(capsys, families, knows_the_old_family, tmp_path):
    """Corrected predictions whose images were stored join the training images."""
    from dualsight_hf.serve.history import History

    history = History(str(tmp_path / "history.sqlite3"))
    rows = []
    for index, image in enumerate(sorted(Path(families["new"]["fake"]).glob("*.png"))[:4]):
        rows.append({"id": f"p{index}", "created_at": datetime(2026, 12, 1), "request_id": "r",
                     "image_index": index, "client_id": None, "sha256": "0" * 64, "file_name": image.name,
                     "size_bytes": 1, "model_id": "m", "model_revision": None, "label": "real", "score": 0.6,
                     "uncertain": False, "decision_threshold": 0.5, "authenticity": [], "objects": [],
                     "latency_ms": 1.0, "stored_image": str(image), "provenance": None, "decided_by": "pixels"})
    history.record(rows)
    for entry in rows:
        history.record_feedback(entry["id"], "ai_generated", reviewer="ana")
    few_fakes = tmp_path / "few-fakes"
    few_fakes.mkdir()
    for image in sorted(Path(families["new"]["fake"]).glob("*.png"))[4:10]:
        (few_fakes / image.name).write_bytes(image.read_bytes())
    code = main(["adapt", "--model", str(knows_the_old_family), "--fake", str(few_fakes), "--real",
                 families["new"]["real"], "--from-history", str(tmp_path / "history.sqlite3"), "--out",
                 str(tmp_path / "adapted"), "--epochs", "2", "--replay"])
    assert code == 0 and "## Adaptation" in capsys.readouterr().out
    report = json.loads((tmp_path / "adapted" / "adaptation.json").read_text())
    assert sum(report["shots"].values()) + sum(report["held_back"].values()) == 6 + 4 + 24
    assert sum(path.endswith(".png") for path in report["sources"]["ai_generated"]) == 4


@pytest.mark.parametrize("stream", [None, {"crop_size": 16, "crops_per_side": 2, "crop_aggregation": "max"}])
def test_head_on_cached_inputs_takes_the_same_steps_as_the_whole_model(families, tmp_path, stream):
    """Training the head on its inputs computed once ends where training the whole model with everything before
    the head frozen ends (same samples, same steps): the cache changes the cost, not the result."""
    import tempfile

    import torch
    from transformers import TrainingArguments

    from dualsight_hf.data.augmentation import ImageTransform, collate
    from dualsight_hf.models.loading import load_image_processor
    from dualsight_hf.training.adaptation import HeadOnCachedInputs, head_inputs, trainable_model, user_examples
    from dualsight_hf.training.trainer import DualSightTrainer

    folder = save_tiny_model(tmp_path / "base", seed=5, **({"artifact_stream": stream} if stream else {}))
    processor = load_image_processor(str(folder))
    table = user_examples([families["new"]["fake"]], [families["new"]["real"]],
                          trainable_model(str(folder), "head").config, 8).select_columns(["image", "label"])
    weights = [1.0 / len(table)] * len(table)

    def train(cached: bool):
        model = trainable_model(str(folder), "head")
        if cached:
            trained, dataset, collator = HeadOnCachedInputs(model), head_inputs(model, table, processor), None
        else:
            dataset = table.with_transform(ImageTransform(processor))
            trained, collator = model, collate
        with tempfile.TemporaryDirectory() as scratch:
            arguments = TrainingArguments(output_dir=scratch, num_train_epochs=3, learning_rate=1e-2, seed=0,
                                          per_device_train_batch_size=8, save_strategy="no", report_to=[],
                                          logging_strategy="no", remove_unused_columns=False, disable_tqdm=True,
                                          dataloader_pin_memory=False, label_names=["labels"], use_cpu=True)
            DualSightTrainer(model=trained, args=arguments, train_dataset=dataset, data_collator=collator,
                             sample_weights=weights).train()
        return model.classifier.weight.detach().clone()

    start = trainable_model(str(folder), "head").classifier.weight.detach()
    on_images, on_cache = train(cached=False), train(cached=True)
    assert not torch.allclose(on_images, start)
    torch.testing.assert_close(on_cache, on_images, rtol=1e-4, atol=1e-5)
