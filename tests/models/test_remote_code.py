"""Remote code: a saved DualSight folder loads in a Python that cannot import `dualsight_hf`, from the folder and by
repo id from a Hugging Face cache laid out as a download, offline, with the same outputs as the installed package."""

import json

from conftest import assert_same, lay_out_as_hub_download, run_without_package, save_tiny_model


def test_saved_folder_loads_with_remote_code(tiny_model_dir, image_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration.DualSightConfig", "AutoModel": "modeling.DualSightModel",
                                  "AutoModelForImageClassification": "modeling.DualSightForImageClassification"}
    assert config["custom_pipelines"]["image-classification"]["impl"] == \
        "pipeline.DualSightImageClassificationPipeline"
    image = str(image_dir / "a.jpg")
    assert_same(run_without_package(str(tiny_model_dir), image), tiny_model_dir, image)


def test_loads_by_repo_id_from_an_offline_hub_cache(tiny_model_dir, image_dir, tmp_path):
    hf_home = tmp_path / "hf-home"
    lay_out_as_hub_download(tiny_model_dir, hf_home, "dualsight-org/tiny-dualsight")
    image = str(image_dir / "b.png")
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    remote = run_without_package("dualsight-org/tiny-dualsight", image, env)
    assert_same(remote, tiny_model_dir, image)


def test_artifact_stream_model_loads_with_remote_code(tmp_path, image_dir):
    """The two-input processor and the artifact stream's code travel with the folder."""
    model_dir = save_tiny_model(tmp_path / "artifact-model", artifact_stream={"crop_size": 16, "crops_per_side": 2})
    processor_config = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoImageProcessor": "image_processing.DualSightImageProcessor"}
    assert (model_dir / "artifacts.py").exists() and (model_dir / "image_processing.py").exists()
    image = str(image_dir / "a.jpg")
    remote = run_without_package(str(model_dir), image)
    assert remote["processor_class"].startswith("transformers_modules")
    assert remote["processor_class"].endswith("DualSightImageProcessor")
    assert remote["inputs"] == ["artifact_values", "pixel_values"]
    assert_same(remote, model_dir, image)
