import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, save_tiny_model, shared_path
from PIL import Image
from transformers import TrainingArguments

from dualsight_hf.training.trainer import DataArguments, ModelArguments, parse_arguments, train


@pytest.fixture(scope="module")
def separable_folder(tmp_path_factory):
    """Real = smooth gradients, fake = high-frequency noise: a tiny model can learn it in a few steps."""
    root = tmp_path_factory.mktemp("separable")
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (root / label).mkdir()
        for i in range(24):
            if label == "real":
                ramp = np.linspace(0, 255, 32)
                array = (np.stack([np.add.outer(ramp, ramp * (i % 3)) / (1 + i % 3)] * 3, -1) + i) % 256  # distinct files
            else:
                array = rng.integers(0, 256, (32, 32, 3))
            Image.fromarray(array.astype(np.uint8)).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("start"), with_objects=False)


def training_args(output_dir, **overrides):
    defaults = dict(output_dir=str(output_dir), num_train_epochs=4, per_device_train_batch_size=8,
                    per_device_eval_batch_size=16, learning_rate=3e-3, eval_strategy="epoch", save_strategy="epoch",
                    logging_steps=1, report_to=[], remove_unused_columns=False, use_cpu=True, seed=0,
                    save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="auroc")
    defaults.update(overrides)
    return TrainingArguments(**defaults)


def test_short_training_run_lowers_the_loss_and_writes_results(separable_folder, start_model, tmp_path):
    results = train(ModelArguments(model_name_or_path=str(start_model)),
                    DataArguments(data=str(separable_folder), validation_size=0.25, test_size=0.25, augment=False),
                    training_args(tmp_path / "out", num_train_epochs=8, learning_rate=1e-2,
                                  metric_for_best_model="loss"))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) * 0.8
    assert results["split_sizes"] == {"train": 24, "validation": 12, "test": 12}
    assert results["test"]["accuracy"] >= 0.75
    on_disk = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert on_disk["test"]["accuracy"] == results["test"]["accuracy"]
    for plot in ("training_curves.png", "confusion_matrix.png", "roc_curve.png", "reliability_diagram.png"):
        assert Image.open(tmp_path / "out" / plot).size[0] > 100
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "modeling.py").exists()


def test_split_caps_give_seeded_subsets(separable_folder, start_model, tmp_path):
    """max_*_samples cut each split to a seeded random subset: the test metrics count exactly that many images."""
    results = train(ModelArguments(model_name_or_path=str(start_model)),
                    DataArguments(data=[str(separable_folder)], validation_size=0.25, test_size=0.25, augment=False,
                                  max_train_samples=10, max_validation_samples=6, max_test_samples=5),
                    training_args(tmp_path / "out", num_train_epochs=1, save_strategy="no",
                                  load_best_model_at_end=False))
    assert results["split_sizes"] == {"train": 10, "validation": 6, "test": 5}
    assert results["test"]["count"] == 5 and results["recipe"]["data"]["max_test_samples"] == 5
    # the run records which examples it used: evaluation reads them back (the capped five), where recomputing the
    # split from its settings would give all twelve
    import dataclasses

    from dualsight_hf import DualSightConfig
    from dualsight_hf.data.split import example_keys
    from dualsight_hf.evaluation.evaluate import EvaluationData

    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert {name: len(keys) for name, keys in record["splits"].items()} == results["split_sizes"]
    assert record["settings"]["max_test_samples"] == 5
    data = EvaluationData.of_model(tmp_path / "out", "test")
    config = DualSightConfig.from_pretrained(tmp_path / "out")
    test = data.load(config)
    assert data.split_record and example_keys(test) == record["splits"]["test"]
    assert len(dataclasses.replace(data, split_record=None).load(config)) == 12
    # a copy with other split settings (as a leave-one-out base is made) recomputes instead of reading the record
    assert not dataclasses.replace(data, split_seed=7).matches_record()
    assert len(dataclasses.replace(data, split_seed=7).load(config)) == 12


def test_early_stopping_stops_when_the_metric_stalls(separable_folder, tmp_path):
    # learning rate 0 and a frozen backbone (BatchNorm statistics fixed too): the validation loss never improves,
    # so patience 1 stops after the second evaluation
    frozen = save_tiny_model(tmp_path / "frozen", with_objects=False, freeze_backbone=True)
    train(ModelArguments(model_name_or_path=str(frozen)),
          DataArguments(data=str(separable_folder), augment=False, early_stopping_patience=1,
                        early_stopping_threshold=1e-4),
          training_args(tmp_path / "out", learning_rate=0.0, num_train_epochs=10, metric_for_best_model="loss"))
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(2.0)


def test_separate_backbone_learning_rate(separable_folder, start_model, tmp_path):
    from transformers import TrainerCallback

    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            seen["lrs"] = sorted({group["lr"] for group in optimizer.param_groups})

    from dualsight_hf.training import trainer as training

    original = training.DualSightTrainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Capture())

    training.DualSightTrainer.__init__ = init
    try:
        train(ModelArguments(model_name_or_path=str(start_model), backbone_learning_rate=1e-4),
              DataArguments(data=str(separable_folder), augment=False, test_size=0.0),
              training_args(tmp_path / "out", num_train_epochs=1, learning_rate=5e-4, warmup_steps=0,
                            lr_scheduler_type="constant"))
    finally:
        training.DualSightTrainer.__init__ = original
    assert seen["lrs"] == [1e-4, 5e-4]


def test_new_model_from_a_seed_config(separable_folder, tmp_path):
    """--config builds the model a config folder describes (here a tiny Reality-Check-like MLP head, frozen
    backbone) and trains only what it leaves trainable."""
    from conftest import tiny_config

    from dualsight_hf.models.image_processing import image_processor_for_backbone

    config = tiny_config(with_objects=False, freeze_backbone=True,
                         authenticity_head={"hidden_sizes": [12, 6], "activation": "relu"})
    config.save_pretrained(tmp_path / "config")
    image_processor_for_backbone(config.backbone_config, size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(
        tmp_path / "config")
    train(ModelArguments(config=str(tmp_path / "config")), DataArguments(data=str(separable_folder), augment=False),
          training_args(tmp_path / "out", num_train_epochs=1))
    from dualsight_hf import load_model

    trained = load_model(str(tmp_path / "out"))
    assert [m.out_features for m in trained.classifier if isinstance(m, torch.nn.Linear)] == [12, 6, 2]
    assert trained.config.freeze_backbone


def test_arguments_from_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "args.yaml"
    yaml_file.write_text("backbone: some/backbone\ndata: data.csv\noutput_dir: out\nstratify_by: source\n"
                         "num_train_epochs: 3\nfreeze_backbone: true\n")
    model_args, data_args, args = parse_arguments([str(yaml_file)])
    assert model_args.backbone == "some/backbone" and model_args.freeze_backbone
    assert data_args.stratify_by == "source" and args.num_train_epochs == 3
    json_file = tmp_path / "args.json"
    json_file.write_text(json.dumps({"model_name_or_path": "m", "data": "d", "output_dir": "o"}))
    assert parse_arguments([str(json_file)])[0].model_name_or_path == "m"


def test_several_data_sources_from_the_command_line_and_yaml(tmp_path):
    args = parse_arguments(["--backbone", "b", "--data", "one.csv", "two.csv", "--output_dir", "o",
                            "--balance_by", "source", "--freeze_backbone", "--unfrozen_backbone_stages", "2"])
    assert args[1].data == ["one.csv", "two.csv"] and args[1].balance_by == "source"
    assert args[0].unfrozen_backbone_stages == 2
    yaml_file = tmp_path / "args.yaml"
    yaml_file.write_text("backbone: b\ndata: [one.csv, two.csv]\nobjects_file: [o1.csv, o2.csv]\noutput_dir: o\n")
    assert parse_arguments([str(yaml_file)])[1].objects_file == ["o1.csv", "o2.csv"]


def test_balanced_sampling_draws_each_stratum_alike(separable_folder, start_model, tmp_path):
    """With balance_by, an epoch draws (with replacement) in proportion to `balancing_weights`: a source of 4
    examples is drawn as often as one of 20; without it every example comes once."""
    from dualsight_hf.data.sources import load_examples
    from dualsight_hf.data.split import balancing_weights
    from dualsight_hf.training.trainer import DualSightTrainer

    table = load_examples(str(separable_folder))
    table = table.add_column("source", ["small" if i % 6 == 0 else "large" for i in range(len(table))])
    weights = balancing_weights(table, "source")
    args = training_args(tmp_path / "out", per_device_train_batch_size=len(table), data_seed=1, eval_strategy="no",
                         save_strategy="no", load_best_model_at_end=False)
    trainer = DualSightTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=table, sample_weights=weights)
    drawn = [index for _ in range(50) for index in trainer._get_train_sampler()]
    small = np.isin(drawn, [i for i, source in enumerate(table["source"]) if source == "small"]).mean()
    assert len(drawn) == 50 * len(table) and 0.45 < small < 0.55  # 8 of 48 examples, half of the draws
    plain = DualSightTrainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=table)
    assert sorted(plain._get_train_sampler()) == list(range(len(table)))


def test_the_readme_train_command_runs_as_written(separable_folder, tmp_path, capsys):
    """The README's first train command, without --remove_unused_columns: the script keeps the image column itself,
    and the run's folder is complete (the backbone's processor saved beside the model)."""
    from dualsight_hf import load_pipeline
    from dualsight_hf.training.trainer import main

    backbone = shared_path("weights", "mobilenet-v2-1.0-224-imagenet")
    assert main(["--backbone", str(backbone), "--data", str(separable_folder), "--output_dir", str(tmp_path / "out"),
                 "--num_train_epochs", "1", "--max_train_samples", "8", "--report_to", "none", "--use_cpu"]) == 0
    assert (tmp_path / "out" / "preprocessor_config.json").exists()
    assert len(load_pipeline(tmp_path / "out")(str(separable_folder / "real" / "0.png"))) == 2


@pytest.mark.parametrize("argument, value, message", [
    ("--backbone", "microsoft/resnet-50", "microsoft/resnet-50: cannot load the backbone"),
    ("--backbone", "./no-such-backbone", "./no-such-backbone: no such backbone folder"),
    ("--data", "./no-such-folder", "./no-such-folder: no such folder"),
    ("--data", "missing.csv", "missing.csv: no such manifest file"),
])
def test_what_cannot_be_read_ends_in_one_line(argument, value, message, separable_folder, tmp_path, capsys,
                                              monkeypatch):
    """A backbone or data source that cannot be read (a Hub id offline included) ends in one line on stderr and
    exit status 2, before any training starts."""
    import huggingface_hub

    from dualsight_hf.training.trainer import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    arguments = {"--backbone": str(shared_path("weights", "mobilenet-v2-1.0-224-imagenet")),
                 "--data": str(separable_folder), argument: value}
    argv = [word for pair in arguments.items() for word in pair] + ["--output_dir", str(tmp_path / "out")]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train: error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_two_process_launch_splits_the_data(separable_folder, start_model, tmp_path):
    """`accelerate launch` with 2 processes (gloo on CPU) trains one model on two ranks: each epoch then takes half
    the steps of a single process."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "29517", str(REPO / "train.py"), "--model_name_or_path", str(start_model), "--data", str(separable_folder),
               "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
               "--validation_size", "0.25", "--test_size", "0.25", "--no_augment", "--use_cpu",
               "--remove_unused_columns", "False", "--report_to", "none", "--eval_strategy", "epoch",
               "--save_strategy", "no", "--ddp_backend", "gloo"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["max_steps"] == 3  # 24 training images / (2 ranks x 4 per rank)
    assert (out / "model.safetensors").exists()
    assert json.loads((out / "all_results.json").read_text())["test"]["count"] == 12


def test_artifact_stream_trains_on_random_native_crops(separable_folder, tmp_path):
    """An artifact-only head (no semantic feature) learns noise vs smooth images from one random crop per image,
    and the run saves the two-input processor beside the model."""
    start = save_tiny_model(tmp_path / "start", with_objects=False, artifact_stream={
        "channels": [8, 16], "crop_size": 16, "crops_per_side": 2, "semantic_features": False})
    results = train(ModelArguments(model_name_or_path=str(start)),
                    DataArguments(data=str(separable_folder), validation_size=0.25, test_size=0.25, jpeg_p=0,
                                  blur_p=0, rescale_p=0),
                    training_args(tmp_path / "out", num_train_epochs=6, learning_rate=1e-2))
    assert results["test"]["accuracy"] >= 0.75
    config = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "DualSightImageProcessor" and config["artifact_crops_per_side"] == 2


def test_artifact_stream_argument_for_a_new_model(tmp_path):
    from conftest import shared_path

    from dualsight_hf.training.trainer import build_model

    model_args = parse_arguments(["--backbone", "b", "--data", "d", "--output_dir", "o",
                                  "--artifact_stream", '{"crop_size": 32}'])[0]
    assert model_args.artifact_stream == {"crop_size": 32}
    model_args.backbone = str(shared_path("weights", "mobilenet-v2-1.0-224-imagenet"))
    model_args.object_labels = "none"
    model, processor = build_model(model_args, examples=None)
    assert model.config.artifact_stream["crop_size"] == 32 and model.dualsight.artifact_encoder is not None
    assert processor.artifact_crop_size == 32 and type(processor.semantic).__name__ == "MobileNetV2ImageProcessorPil"



def test_artifact_stream_argument_needs_a_new_model(start_model):
    from dualsight_hf.training.trainer import build_model

    with pytest.raises(ValueError, match="--artifact_stream applies to a new model"):
        build_model(ModelArguments(model_name_or_path=str(start_model), artifact_stream={}), examples=None)
