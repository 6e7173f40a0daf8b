import pytest
import torch
from conftest import save_tiny_model

from dualsight_hf import UnsafeWeightsError, load_model, load_pipeline
from dualsight_hf.cli import main


@pytest.fixture
def pickle_only_model(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    model = load_model(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_pickle_only_folder_is_refused_by_default(pickle_only_model):
    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model\.bin.*--allow-pickle"):
        load_model(str(pickle_only_model))
    with pytest.raises(UnsafeWeightsError):
        load_pipeline(pickle_only_model)


def test_pickle_weights_load_after_opting_in(pickle_only_model, tmp_path):
    reference = save_tiny_model(tmp_path / "reference")
    loaded = load_model(str(pickle_only_model), allow_pickle=True)
    expected = load_model(str(reference))
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_cli_names_the_flag(pickle_only_model, image_dir, capsys):
    assert main(["predict", str(image_dir), "--model", str(pickle_only_model)]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["predict", str(image_dir), "--model", str(pickle_only_model), "--allow-pickle"]) == 0


@pytest.mark.parametrize("model", ["/no/such/model/folder", "some-org/unreachable-model"])
def test_unloadable_models_get_one_line_errors(model, image_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["predict", str(image_dir), "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dualsight: error: {model}: ") and "\n" not in err and "Traceback" not in err
