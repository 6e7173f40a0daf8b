"""Convert the original DualSight checkpoint (torchvision ResNet-50 + two linear heads) into a DualSight HF folder."""

import json
import re
from pathlib import Path

import torch
from transformers import ResNetConfig

from .configuration import DualSightConfig
from .image_processing import image_processor_for_backbone
from .modeling import DualSightForImageClassification

#: The original's authenticity head: index 0 = "AI-Generated", 1 = "Real". DualSight orders them real, ai_generated.
ORIGINAL_AUTHENTICITY_ORDER = ("ai_generated", "real")

def rename_torchvision_resnet_key(key: str) -> str | None:
    """The transformers `ResNetModel` name of a torchvision ResNet key under `backbone.`; `None` if it is not one.

    `backbone.layer2.0.conv3.weight` -> `encoder.stages.1.layers.0.layer.2.convolution.weight`,
    `backbone.layer2.0.downsample.1.running_mean` -> `encoder.stages.1.layers.0.shortcut.normalization.running_mean`.
    """
    parts = key.split(".")
    if parts[0] != "backbone" or len(parts) < 3:
        return None
    module, attribute = parts[1], parts[-1]
    if module in ("conv1", "bn1"):
        return f"embedder.embedder.{'convolution' if module == 'conv1' else 'normalization'}.{attribute}"
    stage = re.fullmatch(r"layer(\d)", module)
    if not stage or len(parts) < 5:
        return None
    prefix = f"encoder.stages.{int(stage[1]) - 1}.layers.{parts[2]}."
    if parts[3] == "downsample":
        return prefix + f"shortcut.{'convolution' if parts[4] == '0' else 'normalization'}.{attribute}"
    inner = re.fullmatch(r"(conv|bn)(\d)", parts[3])
    if not inner:
        return None
    kind = "convolution" if inner[1] == "conv" else "normalization"
    return prefix + f"layer.{int(inner[2]) - 1}.{kind}.{attribute}"


def convert_original_dualsight(weights_path, mapping_path, out_dir) -> DualSightForImageClassification:
    """
    Turn the original DualSight model into a DualSight HF folder.

    The original (Abmstpha/dual-sight-project): torchvision ResNet-50 with `fc` = identity under `backbone.`,
    `obj_head` Linear(2048, 494) over the comma-joined combination classes of `obj_label_mapping.json`, and
    `bin_head` Linear(2048, 2) with 0 = "AI-Generated", 1 = "Real"; preprocessing resize 256, centre crop 224,
    ImageNet mean/std.

    The `.pth` is read with `torch.load(weights_only=True)` (no code in it runs). The authenticity rows are reordered
    to DualSight's `{0: "real", 1: "ai_generated"}`; the object head becomes a single-label head with the mapping's
    names; the image processor is set to the original preprocessing.

    Args:
        weights_path (`str` or `Path`): the original state dict (`Yolloplusclassproject_weights.pth`).
        mapping_path (`str` or `Path`): `obj_label_mapping.json` (name -> index).
        out_dir (`str` or `Path`): where to save the converted model and processor.

    Returns:
        [`DualSightForImageClassification`]: the converted model, in eval mode.
    """
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    mapping = json.loads(Path(mapping_path).read_text())
    object_id2label = {int(index): name for name, index in mapping.items()}
    if state["obj_head.weight"].shape[0] != len(object_id2label):
        raise ValueError(f"{weights_path}: obj_head has {state['obj_head.weight'].shape[0]} outputs but "
                         f"{mapping_path} names {len(object_id2label)} classes")
    config = DualSightConfig(backbone_config=ResNetConfig(), object_id2label=object_id2label,
                             object_problem_type="single_label_classification")
    model = DualSightForImageClassification(config).eval()

    backbone_state = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            new_key = rename_torchvision_resnet_key(key)
            if new_key is None:
                raise ValueError(f"{weights_path}: unexpected backbone key {key}")
            backbone_state[new_key] = value
    model.dualsight.backbone.load_state_dict(backbone_state, strict=True)

    order = [ORIGINAL_AUTHENTICITY_ORDER.index(config.id2label[i]) for i in range(config.num_labels)]
    with torch.no_grad():
        model.classifier.weight.copy_(state["bin_head.weight"][order])
        model.classifier.bias.copy_(state["bin_head.bias"][order])
        model.object_classifier.weight.copy_(state["obj_head.weight"])
        model.object_classifier.bias.copy_(state["obj_head.bias"])

    model.save_pretrained(out_dir)
    image_processor_for_backbone(config.backbone_config).save_pretrained(out_dir)
    return model
