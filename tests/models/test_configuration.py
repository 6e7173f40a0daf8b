import pytest
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, MobileNetV2Config, ResNetConfig, ViTConfig

from dualsight_hf import DualSightConfig
from dualsight_hf.models.configuration import ARTIFACT_STREAM_DEFAULTS


def test_defaults_are_the_original_layout():
    config = DualSightConfig()
    assert config.model_type == "dualsight"
    assert isinstance(config.backbone_config, ResNetConfig)
    assert list(config.backbone_config.depths) == [3, 4, 6, 3] and config.backbone_config.layer_type == "bottleneck"
    assert config.id2label == {0: "real", 1: "ai_generated"}
    assert config.label2id == {"real": 0, "ai_generated": 1}
    assert config.num_object_labels == 0


def test_backbone_config_from_dict_and_object():
    from_dict = DualSightConfig(backbone_config={"model_type": "mobilenet_v2", "depth_multiplier": 0.5})
    from_object = DualSightConfig(backbone_config=MobileNetV2Config(depth_multiplier=0.5))
    assert isinstance(from_dict.backbone_config, MobileNetV2Config)
    assert from_dict.backbone_config.depth_multiplier == from_object.backbone_config.depth_multiplier == 0.5


def test_json_round_trip_keeps_integer_keys_and_nested_backbone(tmp_path):
    config = DualSightConfig(
        backbone_config=MobileNetV2Config(depth_multiplier=0.35),
        id2label={0: "human", 1: "dalle", 2: "other_ai"},
        object_id2label={0: "bottle, cup", 1: "person"},
        object_problem_type="single_label_classification",
        object_loss_weight=0.3,
        classifier_dropout=0.1,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, DualSightConfig)
    assert loaded.object_id2label == {0: "bottle, cup", 1: "person"}
    assert all(isinstance(k, int) for k in loaded.object_id2label)
    assert loaded.object_label2id == {"bottle, cup": 0, "person": 1}
    assert loaded.id2label == {0: "human", 1: "dalle", 2: "other_ai"} and loaded.num_labels == 3
    assert isinstance(loaded.backbone_config, MobileNetV2Config) and loaded.backbone_config.depth_multiplier == 0.35
    assert loaded.object_problem_type == "single_label_classification"
    assert (loaded.object_loss_weight, loaded.classifier_dropout) == (0.3, 0.1)


def test_num_object_labels_shortcut_and_off_switch():
    assert DualSightConfig(num_object_labels=3).object_id2label == {0: "OBJECT_0", 1: "OBJECT_1", 2: "OBJECT_2"}
    assert DualSightConfig(num_object_labels=0).num_object_labels == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"object_problem_type": "regression"}, "object_problem_type"),
    ({"object_id2label": {1: "a", 2: "b"}}, "object_id2label keys must be 0..1"),
    ({"classifier_dropout": 1.5}, "classifier_dropout must be in"),
    ({"artifact_stream": {"crop_size": 63}}, "crop_size"),
    ({"artifact_stream": {"residuals": ["fft"]}}, "residuals"),
    ({"artifact_stream": {"crop_aggregation": "median"}}, "crop_aggregation"),
    ({"artifact_stream": {"crops": 3}}, "unknown keys"),
    ({"backbone_config": ViTConfig(num_hidden_layers=1), "backbone_feature_layers": [2]},
     "hidden-state indices in 0..1"),
    ({"backbone_config": ViTConfig(num_hidden_layers=1), "backbone_feature_layers": []}, "hidden-state indices"),
    ({"backbone_feature_layers": [1]}, "a 'resnet' backbone has none"),
])
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        DualSightConfig(**kwargs)


def test_artifact_stream_is_off_by_default_and_filled_with_defaults(tmp_path):
    assert DualSightConfig().artifact_stream is None
    config = DualSightConfig(artifact_stream={"crop_size": 32})
    assert config.artifact_stream == {**ARTIFACT_STREAM_DEFAULTS, "crop_size": 32}
    config.save_pretrained(tmp_path)
    assert DualSightConfig.from_pretrained(tmp_path).artifact_stream == config.artifact_stream
