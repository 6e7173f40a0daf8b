"""Every seed system's config (configs/) builds, at tiny widths with the same structure, and trains, saves, loads
with remote code and runs in the pipeline."""

import importlib.util

import pytest
import torch
from conftest import REPO, assert_same, random_image, run_without_package
from transformers import AutoConfig

from dualsight_hf import (
    DualSightConfig,
    DualSightForImageClassification,
    image_processor_for_backbone,
    load_image_processor,
    load_pipeline,
)

SEED_CONFIGS = sorted(p.name for p in (REPO / "configs").iterdir() if (p / "config.json").exists())
TINY_WIDTHS = {
    "resnet": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
    "vit": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, image_size=32,
                patch_size=8),
    "convnext": dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
    "swin": dict(embed_dim=8, depths=[1, 1], num_heads=[1, 2], image_size=32, patch_size=4, window_size=4),
    "timm_wrapper": dict(model_args={"growth_rate": 8, "block_config": (1, 1), "num_init_features": 8}),
}


def tiny(backbone_config):
    keep = {"layer_type": backbone_config.layer_type} if backbone_config.model_type == "resnet" else {}
    if backbone_config.model_type == "timm_wrapper":
        keep = {"architecture": backbone_config.architecture}
    return AutoConfig.for_model(backbone_config.model_type, **keep, **TINY_WIDTHS[backbone_config.model_type])


def tiny_version(name: str) -> DualSightConfig:
    config = DualSightConfig.from_pretrained(REPO / "configs" / name)
    if any(c.model_type == "timm_wrapper" for c in config.backbone_configs) and not importlib.util.find_spec("timm"):
        pytest.skip("timm backbones need the optional timm package (it pulls torchvision): pip install timm")
    config.backbone_config = tiny(config.backbone_config)
    config.extra_backbone_configs = [tiny(c) for c in config.extra_backbone_configs or []] or None
    return config


def test_every_seed_system_has_a_config():
    assert SEED_CONFIGS == ["ai-guard-vision", "convitx", "densenet-dh3", "dualsight", "reality-check"]


def test_the_full_size_configs_describe_the_originals():
    load = lambda name: DualSightConfig.from_pretrained(REPO / "configs" / name)  # noqa: E731
    dualsight = load("dualsight")
    assert dualsight.backbone_config.model_type == "resnet" and list(dualsight.backbone_config.depths) == [3, 4, 6, 3]
    assert dualsight.num_object_labels == 494 and dualsight.object_problem_type == "single_label_classification"
    reality = load("reality-check")
    assert reality.freeze_backbone and reality.authenticity_head["hidden_sizes"] == [1000, 500]
    vit = load("ai-guard-vision").backbone_config
    assert (vit.model_type, vit.hidden_size, vit.patch_size, vit.image_size) == ("vit", 768, 16, 224)
    convitx = load("convitx")
    assert [c.model_type for c in convitx.backbone_configs] == ["convnext", "swin"]
    assert convitx.backbone_configs[0].hidden_sizes[-1] == 1536 and convitx.backbone_configs[1].embed_dim == 128
    assert convitx.authenticity_single_logit and convitx.authenticity_head == {
        "hidden_sizes": [1024, 512, 256], "activation": "relu", "dropout": 0.4, "norm": "batch_norm"}
    densenet = load("densenet-dh3")
    assert densenet.backbone_config.architecture == "densenet121" and densenet.num_labels == 3
    assert densenet.id2label == {0: "human", 1: "dalle", 2: "other_ai"} and densenet.freeze_backbone
    for name in SEED_CONFIGS:  # each ships the original's preprocessing
        processor = load_image_processor(str(REPO / "configs" / name))
        assert processor(random_image(300, 200), return_tensors="pt")["pixel_values"].shape[-2:] == (224, 224)


@pytest.mark.parametrize("name", SEED_CONFIGS)
def test_seed_system_trains_saves_loads_and_runs(name, tmp_path, image_dir):
    config = tiny_version(name)
    torch.manual_seed(0)
    model = DualSightForImageClassification(config)
    frozen = config.freeze_backbone
    if frozen:
        assert not any(p.requires_grad for b in model.dualsight.backbones for p in b.parameters())
    labels = torch.arange(4) % config.num_labels
    object_labels = torch.zeros(4, dtype=torch.long) if config.num_object_labels else None
    out = model.train()(torch.randn(4, 3, 32, 32), labels=labels, object_labels=object_labels)
    assert out.logits.shape == (4, config.num_labels)
    out.loss.backward()
    assert all(p.grad is not None for p in model.classifier.parameters())
    if frozen:
        assert all(p.grad is None for b in model.dualsight.backbones for p in b.parameters())

    folder = tmp_path / "model"
    model.eval().save_pretrained(folder)
    fixed_size = config.backbone_config.model_type in ("vit", "swin")
    size = {"height": 32, "width": 32} if fixed_size else {"shortest_edge": 32}
    image_processor_for_backbone(config.backbone_config, size=size, crop_size={"height": 32, "width": 32},
                                 crop_pct=1.0).save_pretrained(folder)
    loaded = DualSightForImageClassification.from_pretrained(folder).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits)
    result = load_pipeline(folder)(str(image_dir / "a.jpg"))
    assert {r["label"] for r in result} == set(config.id2label.values())
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)
    if config.num_object_labels:
        assert_same(run_without_package(str(folder), str(image_dir / "a.jpg")), folder, str(image_dir / "a.jpg"))


def test_single_logit_head_is_binary_cross_entropy():
    config = tiny_version("convitx")
    torch.manual_seed(0)
    model = DualSightForImageClassification(config).eval()
    out = model(torch.randn(3, 3, 32, 32), labels=torch.tensor([0, 1, 1]))
    z = out.logits[:, 1] - out.logits[:, 0]
    assert model.classifier[-1].out_features == 1
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor([0.0, 1.0, 1.0]))
    assert torch.isclose(out.authenticity_loss, expected, atol=1e-6)


def test_freeze_all_but_the_last_stages():
    config = tiny_version("reality-check")
    config.backbone_config = AutoConfig.for_model("resnet", embedding_size=8, hidden_sizes=[8, 16, 24],
                                                  depths=[1, 1, 1])
    config.unfrozen_backbone_stages = 1
    model = DualSightForImageClassification(config).train()
    trainable = {".".join(n.split(".")[1:3]) for n, p in model.dualsight.backbone.named_parameters()
                 if p.requires_grad and n.startswith("encoder.stages")}
    assert trainable == {"stages.2"}
    assert not any(p.requires_grad for n, p in model.dualsight.backbone.named_parameters() if n.startswith("embedder"))
    last_stage_norms = [m for m in model.dualsight.backbone.encoder.stages[2].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    first_stage_norms = [m for m in model.dualsight.backbone.encoder.stages[0].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training for m in last_stage_norms) and not any(m.training for m in first_stage_norms)


def test_each_backbone_gets_its_own_preprocessing():
    """One processor makes the input; a second backbone pretrained with other statistics and another size sees
    exactly what its own processor's normalisation would give, resized."""
    from conftest import TINY_BACKBONES

    from dualsight_hf.models.modeling import adapt_input

    given = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    wanted = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": [48, 48]}
    images = torch.rand(2, 3, 32, 32)
    pixel_values = (images - 0.5) / 0.5
    adapted = adapt_input(pixel_values, given, wanted)
    mean, std = torch.tensor(wanted["image_mean"])[:, None, None], torch.tensor(wanted["image_std"])[:, None, None]
    expected = torch.nn.functional.interpolate((images - mean) / std, size=(48, 48), mode="bilinear",
                                               antialias=True)
    torch.testing.assert_close(adapted, expected, atol=1e-5, rtol=1e-5)

    config = DualSightConfig(backbone_config=[TINY_BACKBONES["vit"](), TINY_BACKBONES["resnet"]()],
                             backbone_preprocessing=[given, wanted])
    model = DualSightForImageClassification(config).eval()
    seen = {}
    model.dualsight.extra_backbones[0].register_forward_hook(lambda module, args, output: seen.update(input=args[0]))
    with torch.no_grad():
        model(pixel_values)
    torch.testing.assert_close(seen["input"], expected, atol=1e-5, rtol=1e-5)
    from huggingface_hub.errors import StrictDataclassError

    with pytest.raises((ValueError, StrictDataclassError), match="one entry per backbone"):
        DualSightConfig(backbone_config=[TINY_BACKBONES["vit"](), TINY_BACKBONES["resnet"]()],
                        backbone_preprocessing=[given])
