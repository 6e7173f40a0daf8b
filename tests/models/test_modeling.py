import pytest
import torch
from conftest import TINY_BACKBONES, random_image, shared_path, tiny_config
from transformers import AutoModel, AutoModelForImageClassification

from dualsight_hf import (
    DualSightConfig,
    DualSightForImageClassification,
    DualSightImageClassifierOutput,
    DualSightModel,
)
from dualsight_hf.models.modeling import pooled_feature_size

ARTIFACT = {"channels": [4, 8], "crop_size": 16, "crops_per_side": 2}

PROBLEM_TYPES = ["multi_label_classification", "single_label_classification"]


def object_targets(problem_type: str, batch: int = 4, known=(True, True, False, True)):
    if problem_type == "multi_label_classification":
        targets = torch.randint(0, 2, (batch, 3)).float()
        targets[[i for i, k in enumerate(known) if not k]] = -100.0
        return targets
    targets = torch.randint(0, 3, (batch,))
    targets[[i for i, k in enumerate(known) if not k]] = -100
    return targets


@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
@pytest.mark.parametrize("problem_type", PROBLEM_TYPES)
def test_forward_backward_every_backbone(backbone, problem_type):
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(backbone, problem_type))
    pixels = torch.randn(4, 3, 32, 32)
    out = model(pixels, labels=torch.tensor([0, 1, 1, 0]), object_labels=object_targets(problem_type),
                output_hidden_states=True)
    assert isinstance(out, DualSightImageClassifierOutput)
    assert out.logits.shape == (4, 2) and out.object_logits.shape == (4, 3)
    assert out.hidden_states is not None and len(out.hidden_states) > 1
    assert torch.isclose(out.loss, out.authenticity_loss + out.object_loss)
    out.loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith(("classifier", "object_classifier")):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
def test_pooled_feature_size_matches_the_backbone(backbone):
    model = DualSightForImageClassification(tiny_config(backbone))
    assert model.classifier.in_features == pooled_feature_size(model.config.backbone_config)


def test_object_head_off():
    model = DualSightForImageClassification(tiny_config(with_objects=False))
    assert model.object_classifier is None
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]), object_labels=torch.ones(2, 3))
    assert out.object_logits is None and out.object_loss is None
    assert torch.equal(out.loss, out.authenticity_loss)


def test_multi_label_loss_ignores_unknown_rows_exactly():
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config()).eval()
    pixels = torch.randn(3, 3, 32, 32)
    targets = torch.tensor([[1.0, 0.0, 1.0], [-100.0, -100.0, -100.0], [0.0, 1.0, 0.0]])
    out = model(pixels, object_labels=targets)
    known = out.object_logits[[0, 2]]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(known, targets[[0, 2]])
    assert torch.isclose(out.object_loss, expected)
    assert out.authenticity_loss is None and torch.isclose(out.loss, out.object_loss)


def test_batch_without_object_labels_still_trains_authenticity():
    for problem_type in PROBLEM_TYPES:
        model = DualSightForImageClassification(tiny_config(object_problem_type=problem_type))
        out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]),
                    object_labels=object_targets(problem_type, 2, known=(False, False)))
        assert out.object_loss is None
        assert torch.isfinite(out.loss) and torch.equal(out.loss, out.authenticity_loss)
        out.loss.backward()
        assert model.classifier.weight.grad.abs().sum() > 0


def test_loss_weights():
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(authenticity_loss_weight=0.25, object_loss_weight=2.0))
    out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1]), object_labels=torch.ones(2, 3))
    assert torch.isclose(out.loss, 0.25 * out.authenticity_loss + 2.0 * out.object_loss)


def test_return_dict_false_gives_a_tuple():
    model = DualSightForImageClassification(tiny_config())
    out = model(torch.randn(1, 3, 32, 32), return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, 2) and out[1].shape == (1, 3)


@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
def test_save_load_round_trip_and_auto_classes(tmp_path, backbone):
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(backbone)).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "configuration.py", "modeling.py", "pipeline.py"} <= files
    assert not any(name.endswith((".bin", ".pth")) for name in files)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is DualSightForImageClassification
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(pixels), loaded(pixels)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.object_logits, b.object_logits)
    headless = AutoModel.from_pretrained(tmp_path).eval()
    assert type(headless) is DualSightModel
    with torch.no_grad():
        torch.testing.assert_close(headless(pixels).pooler_output, model.dualsight(pixels).pooler_output)
    # saving must not leave the remote-code pipeline entry on the in-memory config
    assert not hasattr(model.config, "custom_pipelines")


def test_the_headless_model_gives_the_features_the_heads_read(tmp_path):
    """`DualSightModel` (what `AutoModel` maps to, `base_model_prefix` "dualsight"): `pooler_output` is what the
    object head reads, `artifact_features` one row per crop; its own checkpoint loads into the classifier and the
    classifier's into it."""
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(artifact_stream=ARTIFACT)).eval()
    assert model.base_model is model.dualsight
    pixels, crops = torch.randn(2, 3, 32, 32), torch.rand(2, 4, 3, 16, 16)
    with torch.no_grad():
        outputs = model.dualsight(pixels, crops, output_hidden_states=True)
        torch.testing.assert_close(model.object_classifier(outputs.pooler_output),
                                   model(pixels, crops).object_logits)
    assert outputs.artifact_features.shape == (2, 4, model.dualsight.artifact_encoder.feature_size)
    assert outputs.hidden_states is not None and model.dualsight(crops[:, 0]).artifact_features is None
    model.dualsight.save_pretrained(tmp_path / "headless")
    classifier = DualSightForImageClassification.from_pretrained(tmp_path / "headless")
    for name, tensor in model.dualsight.state_dict().items():
        torch.testing.assert_close(classifier.dualsight.state_dict()[name], tensor, msg=name)
    model.save_pretrained(tmp_path / "whole")
    headless = DualSightModel.from_pretrained(tmp_path / "whole")
    for name, tensor in model.dualsight.state_dict().items():
        torch.testing.assert_close(headless.state_dict()[name], tensor, msg=name)


def test_checkpoints_from_before_the_headless_model_still_load(tmp_path):
    """Published folders hold the backbone and artifact stream at the top level (`backbone.*`,
    `artifact_encoder.*`): both models load them as they are, with the same answers, and a re-save keeps that
    layout (transformers writes a checkpoint back in the layout it was read in)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(artifact_stream=ARTIFACT)).eval()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({key.removeprefix("dualsight."): value for key, value in weights.items()}, tmp_path / "model.safetensors")
    legacy = DualSightForImageClassification.from_pretrained(tmp_path).eval()
    pixels, crops = torch.randn(2, 3, 32, 32), torch.rand(2, 4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(legacy(pixels, crops).logits, model(pixels, crops).logits)
        torch.testing.assert_close(DualSightModel.from_pretrained(tmp_path)(pixels).pooler_output,
                                   model.dualsight(pixels).pooler_output)
    legacy.save_pretrained(tmp_path / "again")
    with safe_open(tmp_path / "again" / "model.safetensors", "pt") as saved:
        assert {key.split(".")[0] for key in saved.keys()} == {"backbone", "artifact_encoder", "classifier",
                                                               "object_classifier"}


def test_freezing_survives_save_and_load(tmp_path):
    DualSightForImageClassification(tiny_config("resnet", freeze_backbone=True)).save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in loaded.dualsight.backbone.parameters())
    assert all(p.requires_grad for p in loaded.classifier.parameters())


def test_freeze_backbone_keeps_batchnorm_statistics():
    model = DualSightForImageClassification(tiny_config("resnet", freeze_backbone=True)).train()
    assert not any(p.requires_grad for p in model.dualsight.backbone.parameters())
    assert model.classifier.weight.requires_grad
    before = {k: v.clone() for k, v in model.dualsight.backbone.state_dict().items() if "running_mean" in k}
    model(torch.randn(4, 3, 32, 32) * 5 + 3, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    after = model.dualsight.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_from_backbone_loads_pretrained_weights_offline():
    path = shared_path("weights", "mobilenet-v2-1.0-224-imagenet")
    model = DualSightForImageClassification.from_backbone(str(path), object_id2label={0: "person", 1: "car"})
    pretrained = AutoModel.from_pretrained(path)
    for name, tensor in pretrained.state_dict().items():
        torch.testing.assert_close(model.dualsight.backbone.state_dict()[name], tensor, msg=name)
    assert model.config.num_object_labels == 2 and model.config.backbone_config.model_type == "mobilenet_v2"
    # TensorFlow-style BatchNorm momentum (0.997) is converted to PyTorch's meaning
    momenta = {m.momentum for m in model.dualsight.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta and max(momenta) < 0.5


def test_a_model_from_a_backbone_saves_a_complete_folder(tmp_path):
    """from_backbone -> save_pretrained -> load_pipeline works as written: the folder gets the backbone's processor
    settings (wrapped for the artifact stream); a folder without a processor is refused in one line that says what
    to add."""
    from transformers import AutoImageProcessor

    from dualsight_hf import load_pipeline
    from dualsight_hf.models.loading import ModelLoadError

    path = shared_path("weights", "mobilenet-v2-1.0-224-imagenet")
    model = DualSightForImageClassification.from_backbone(str(path), artifact_stream={"crop_size": 32})
    model.save_pretrained(tmp_path / "new")
    stock = AutoImageProcessor.from_pretrained(path, backend="pil")
    saved = AutoImageProcessor.from_pretrained(tmp_path / "new")
    assert saved.semantic.to_dict() | {"image_processor_type": None} == stock.to_dict() | {"image_processor_type": None}
    assert saved.artifact_crop_size == 32
    result = load_pipeline(tmp_path / "new")(random_image(64, 48))
    assert sorted(r["label"] for r in result) == ["ai_generated", "real"]
    (tmp_path / "new" / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="no preprocessor_config.json; save the model's image processor") as error:
        load_pipeline(tmp_path / "new")
    assert "\n" not in str(error.value)




@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
def test_artifact_stream_forward_backward_every_backbone(backbone):
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(backbone, artifact_stream=ARTIFACT))
    out = model(torch.randn(4, 3, 32, 32), artifact_values=torch.rand(4, 3, 3, 16, 16),
                labels=torch.tensor([0, 1, 1, 0]), object_labels=object_targets("multi_label_classification"))
    assert out.logits.shape == (4, 2) and out.object_logits.shape == (4, 3)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dualsight.artifact_encoder.parameters()
               if p.ndim > 1)
    # the head reads both features
    assert model.classifier.in_features == pooled_feature_size(model.config.backbone_config, model.dualsight.backbone) + 8


def per_crop_logits(model, pixels, crops):
    """Each crop scored on its own (one crop per image: no aggregation)."""
    return torch.stack([model(pixels, artifact_values=crops[:, k]).logits for k in range(crops.shape[1])], dim=1)


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_crop_aggregation(aggregation):
    torch.manual_seed(0)
    model = DualSightForImageClassification(
        tiny_config(artifact_stream={**ARTIFACT, "crop_aggregation": aggregation})).eval()
    pixels, crops = torch.randn(3, 3, 32, 32), torch.rand(3, 4, 3, 16, 16) * torch.arange(1.0, 5)[None, :, None,
                                                                                                  None, None]
    with torch.no_grad():
        each = per_crop_logits(model, pixels, crops)
        combined = model(pixels, artifact_values=crops).logits
    if aggregation == "mean":
        expected = each.mean(dim=1)
    else:  # the crop that looks least real: smallest P(class 0), found crop by crop
        expected = []
        for image in range(3):
            p_real = [torch.softmax(each[image, k], -1)[0].item() for k in range(4)]
            expected.append(each[image, p_real.index(min(p_real))])
        expected = torch.stack(expected)
        assert not torch.allclose(expected, each.mean(dim=1))
    torch.testing.assert_close(combined, expected, atol=1e-5, rtol=1e-5)


def test_object_head_keeps_the_semantic_feature():
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(artifact_stream=ARTIFACT)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = model(pixels, artifact_values=torch.rand(2, 4, 3, 16, 16))
        second = model(pixels, artifact_values=torch.rand(2, 4, 3, 16, 16))
    torch.testing.assert_close(first.object_logits, second.object_logits)
    assert not torch.allclose(first.logits, second.logits)
    assert model.object_classifier.in_features == pooled_feature_size(model.config.backbone_config, model.dualsight.backbone)


def test_artifact_only_model_does_not_run_an_unused_backbone():
    model = DualSightForImageClassification(
        tiny_config(with_objects=False, artifact_stream={**ARTIFACT, "semantic_features": False})).eval()
    calls = []
    model.dualsight.backbone.register_forward_hook(lambda *args: calls.append(1))
    assert model.classifier.in_features == 8
    out = model(torch.randn(2, 3, 32, 32), artifact_values=torch.rand(2, 4, 3, 16, 16))
    assert out.logits.shape == (2, 2) and not calls
    with_objects = DualSightForImageClassification(
        tiny_config(artifact_stream={**ARTIFACT, "semantic_features": False})).eval()
    with_objects.dualsight.backbone.register_forward_hook(lambda *args: calls.append(1))
    assert with_objects(torch.randn(2, 3, 32, 32), artifact_values=torch.rand(2, 4, 3, 16, 16)).object_logits.shape \
        == (2, 3) and calls


def test_artifact_stream_needs_its_input():
    model = DualSightForImageClassification(tiny_config(artifact_stream=ARTIFACT))
    with pytest.raises(ValueError, match="pass artifact_values"):
        model(torch.randn(1, 3, 32, 32))


def test_artifact_stream_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DualSightForImageClassification(tiny_config(artifact_stream=ARTIFACT)).eval()
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32), "artifact_values": torch.rand(2, 4, 3, 16, 16)}
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.artifact_stream == {**model.config.artifact_stream}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def tiny_clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=8)


def test_backbone_feature_layers_concatenate_the_first_tokens_of_those_blocks(tmp_path):
    torch.manual_seed(0)
    config = DualSightConfig(backbone_config=tiny_clip_vision(), backbone_feature_layers=[1, 3],
                             object_id2label={0: "person", 1: "dog"})
    model = DualSightForImageClassification(config).eval()
    assert model.classifier.in_features == 32 and model.object_classifier.in_features == 32
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = model.dualsight.backbone(pixels, output_hidden_states=True).hidden_states
        features, _ = model.dualsight.semantic_features(pixels)
        logits = model(pixels).logits
    assert torch.equal(features, torch.cat([hidden[1][:, 0], hidden[3][:, 0]], dim=-1))
    assert torch.allclose(logits, model.classifier(features))
    model.save_pretrained(tmp_path)
    reloaded = DualSightForImageClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.backbone_feature_layers == [1, 3]
    with torch.no_grad():
        assert torch.equal(reloaded(pixels).logits, logits)

