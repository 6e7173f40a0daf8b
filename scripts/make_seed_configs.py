#!/usr/bin/env python
"""Write configs/<system>/ (config.json + preprocessor_config.json) for each seed system, at full size.

    python scripts/make_seed_configs.py [--mapping ../shared/data/dualsight-seed/obj_label_mapping.json]
"""

import argparse
import json
from pathlib import Path

from transformers import ConvNextConfig, ResNetConfig, SwinConfig, TimmWrapperConfig, ViTConfig

from dualsight_hf import DualSightConfig
from dualsight_hf.models.image_processing import IMAGENET_MEAN, IMAGENET_STD, image_processor_for_backbone

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def seed_systems(object_mapping: dict[str, int]) -> dict:
    """Each seed system as `(DualSightConfig, image processor)`."""
    resnet_processor = image_processor_for_backbone(ResNetConfig())
    return {
        "dualsight": (DualSightConfig(  # ResNet-50, 494 single-label combination classes + 2-class head
            backbone_config=ResNetConfig(),
            object_id2label={index: name for name, index in object_mapping.items()},
            object_problem_type="single_label_classification",
        ), resnet_processor),
        "reality-check": (DualSightConfig(  # ResNet-50 on faces, frozen, MLP 2048 -> 1000 -> 500 -> 2
            backbone_config=ResNetConfig(), id2label={0: "Real", 1: "Fake"}, freeze_backbone=True,
            authenticity_head={"hidden_sizes": [1000, 500], "activation": "relu"},
        ), resnet_processor),
        "ai-guard-vision": (DualSightConfig(  # ViT-base/16 at 224 on CIFAKE
            backbone_config=ViTConfig(), id2label={0: "REAL", 1: "FAKE"},
        ), image_processor_for_backbone(ViTConfig())),
        "convitx": (DualSightConfig(  # ConvNeXt-Large + Swin-Base, BatchNorm + MLP 1024 -> 512 -> 256, one sigmoid
            backbone_config=[ConvNextConfig(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3]),
                             SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])],
            id2label={0: "real", 1: "fake"}, authenticity_single_logit=True,
            authenticity_head={"hidden_sizes": [1024, 512, 256], "activation": "relu", "dropout": 0.4,
                               "norm": "batch_norm"},
        ), image_processor_for_backbone(ConvNextConfig(), size={"shortest_edge": 224}, crop_pct=224 / 256,
                                        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)),
        "densenet-dh3": (DualSightConfig(  # DenseNet121 (timm), frozen features, human / DALL-E / other AI
            backbone_config=TimmWrapperConfig(architecture="densenet121"),
            id2label={0: "human", 1: "dalle", 2: "other_ai"}, freeze_backbone=True,
        ), resnet_processor),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mapping", default="../shared/data/dualsight-seed/obj_label_mapping.json")
    args = parser.parse_args()
    for name, (config, processor) in seed_systems(json.loads(Path(args.mapping).read_text())).items():
        (CONFIGS / name).mkdir(parents=True, exist_ok=True)
        config.to_json_file(CONFIGS / name / "config.json")  # no code copy: the installed package reads it
        processor.save_pretrained(CONFIGS / name)
        print(f"configs/{name}: {[c.model_type for c in config.backbone_configs]}, labels {config.id2label}")
