"""The original DualSight checkpoint converts exactly: a reference model written here in torchvision's layout (the
original's key names and shapes, random values) and the converted model agree on both heads."""

import json

import pytest
import torch
from conftest import random_image
from torch import nn

from dualsight_hf import load_image_processor, load_pipeline
from dualsight_hf.cli import main
from dualsight_hf.models.convert import convert_original_dualsight


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ReferenceResNet50(nn.Module):
    """torchvision's resnet50 (v1.5) module layout with `fc` = identity."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
            modules = [Bottleneck(inplanes, planes, stride, downsample)]
            inplanes = planes * 4
            modules += [Bottleneck(inplanes, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*modules))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Identity()

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class OriginalMultiTaskModel(nn.Module):
    def __init__(self, num_obj_classes):
        super().__init__()
        self.backbone = ReferenceResNet50()
        self.obj_head = nn.Linear(2048, num_obj_classes)
        self.bin_head = nn.Linear(2048, 2)

    def forward(self, x):
        features = self.backbone(x)
        return self.obj_head(features), self.bin_head(features)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    mapping = {"Unknown": 0, "person": 1, "cup, person": 2, "dog": 3, "car, person": 4}
    (folder / "obj_label_mapping.json").write_text(json.dumps(mapping))
    torch.manual_seed(0)
    model = OriginalMultiTaskModel(len(mapping))
    with torch.no_grad():  # random BatchNorm statistics, so that eval mode really uses them
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.eval()
    torch.save(model.state_dict(), folder / "Yolloplusclassproject_weights.pth")
    return folder, model, mapping


def test_converted_model_matches_the_original(original, tmp_path):
    folder, reference, mapping = original
    converted = convert_original_dualsight(folder / "Yolloplusclassproject_weights.pth",
                                           folder / "obj_label_mapping.json", tmp_path / "converted")
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        obj_logits, bin_logits = reference(pixels)
        out = converted(pixels)
    torch.testing.assert_close(out.object_logits, obj_logits, atol=1e-4, rtol=1e-4)
    # original 0 = AI-Generated, 1 = Real; DualSight 0 = real, 1 = ai_generated
    torch.testing.assert_close(out.logits, bin_logits[:, [1, 0]], atol=1e-4, rtol=1e-4)
    assert converted.config.id2label == {0: "real", 1: "ai_generated"}
    assert converted.config.object_id2label == {i: n for n, i in mapping.items()}
    assert converted.config.object_problem_type == "single_label_classification"


def test_converted_folder_preprocesses_like_the_original(original, tmp_path):
    folder, _, _ = original
    assert main(["convert-dualsight", "--weights", str(folder / "Yolloplusclassproject_weights.pth"),
                 "--mapping", str(folder / "obj_label_mapping.json"), "--out", str(tmp_path / "out")]) == 0
    processor = load_image_processor(str(tmp_path / "out"))
    image = random_image(320, 480, seed=4)
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    # resize the short side to 256, centre crop 224, ImageNet mean/std (the original's torchvision transform)
    import numpy as np
    from PIL import Image

    resized = image.resize((256, 384), Image.BILINEAR)
    left, top = (256 - 224) // 2, (384 - 224) // 2
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    expected = (crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=0.03)
    result = load_pipeline(tmp_path / "out")(image, head="both", top_k=2)
    assert len(result["objects"]) == 2 and result["objects"][0]["label"] in {"Unknown", "person", "cup, person",
                                                                                "dog", "car, person"}


def test_pickle_code_in_the_checkpoint_does_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save({"payload": Payload()}, tmp_path / "evil.pth")
    (tmp_path / "mapping.json").write_text("{}")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        convert_original_dualsight(tmp_path / "evil.pth", tmp_path / "mapping.json", tmp_path / "out")
