"""The default model: what the package ships of it, how `dualsight build-model` makes it, what a command says where it
is not built, and (once built, as `make test` does) that it answers the examples as its record and the README say."""

import json

import pytest
from conftest import REPO, require_default_model
from safetensors import safe_open

from dualsight_hf import DualSightConfig, DualSightForImageClassification
from dualsight_hf.cli import main
from dualsight_hf.models import default_model as default_model_module
from dualsight_hf.models.default_model import (
    DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_PARTS,
    HEADS_FILE,
    MOBILE_MODEL_DIR,
    PARTS_FINGERPRINT_FILE,
    DefaultModelNotBuiltError,
    is_current_build,
    resolve_model,
)


def expected_label(path) -> str:
    return "ai_generated" if path.parent.name == "ai_generated" else "real"


@pytest.fixture(scope="module")
def built() -> str:
    return require_default_model()


def test_the_package_ships_the_heads_config_card_and_record_in_under_a_megabyte():
    files = {path.name for path in DEFAULT_MODEL_PARTS.iterdir()}
    assert {"config.json", HEADS_FILE, "preprocessor_config.json", "README.md", "all_results.json"} <= files
    assert not any(name.endswith((".py", ".bin", ".pth")) or name == "model.safetensors" for name in files)
    assert sum(path.stat().st_size for path in DEFAULT_MODEL_PARTS.rglob("*") if path.is_file()) < 1_000_000
    # the heads are exactly the non-backbone weights of the model its config describes
    config = DualSightConfig.from_pretrained(DEFAULT_MODEL_PARTS)
    assert config.backbone_config.model_type == "clip_vision_model" and config.freeze_backbone
    expected = {key for key in DualSightForImageClassification(config).state_dict()
                if not key.startswith("dualsight.backbone.")}
    with safe_open(DEFAULT_MODEL_PARTS / HEADS_FILE, "pt") as heads:
        assert set(heads.keys()) == expected


def test_names_resolve_and_an_unbuilt_default_is_one_line_saying_what_to_run(tmp_path, monkeypatch, capsys):
    assert resolve_model("mobile") == str(MOBILE_MODEL_DIR)
    assert resolve_model("some-org/some-model") == "some-org/some-model"
    monkeypatch.setattr(default_model_module, "DEFAULT_MODEL_DIR", tmp_path / "not-built")
    with pytest.raises(DefaultModelNotBuiltError, match="dualsight build-model"):
        resolve_model(None)
    assert main(["predict", str(REPO / "examples" / "real" / "chelsea.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run `dualsight build-model` once" in err and "--model mobile" in err


def test_build_model_leaves_a_built_model_alone(built, capsys):
    stamp = (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_mtime_ns
    assert main(["build-model"]) == 0
    assert "already built" in capsys.readouterr().err
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_build_from_other_heads_is_refused_in_one_line_and_built_again(built, tmp_path, monkeypatch, capsys):
    """A folder built by another version of the package (here: its parts fingerprint differs, as after a refit) is
    never used as if it were current: a command says in one line to rebuild, and `build-model` rebuilds it instead of
    answering 'already built'."""
    stale = tmp_path / "dualsight-clip-vit-b16"
    stale.mkdir()
    for item in DEFAULT_MODEL_DIR.iterdir():
        (stale / item.name).symlink_to(item)
    (stale / PARTS_FINGERPRINT_FILE).unlink()
    (stale / PARTS_FINGERPRINT_FILE).write_text("0" * 64 + "\n")
    monkeypatch.setattr(default_model_module, "DEFAULT_MODEL_DIR", stale)
    assert main(["predict", str(REPO / "examples" / "real" / "chelsea.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not built from the parts" in err and "dualsight build-model" in err
    assert main(["build-model", "--work", str(default_model_module.dualsight_home() / "downloads")]) == 0
    assert "building it again" in capsys.readouterr().err
    assert is_current_build(stale) and not (stale / "model.safetensors").is_symlink()
    assert (DEFAULT_MODEL_DIR / "model.safetensors").exists()  # the real build was not touched through the links
    assert main(["build-model"]) == 0 and "already built" in capsys.readouterr().err


def test_a_build_carrying_other_code_files_is_not_current(built, tmp_path, monkeypatch):
    """The fingerprint covers the code files a built folder carries (`remote_code_paths`): a package whose
    modeling code changed, with the same heads, does not take an earlier build for its own."""
    assert is_current_build(DEFAULT_MODEL_DIR)
    changed = tmp_path / "modeling.py"
    changed.write_text(default_model_module.remote_code_paths()[0].read_text() + "\n# another version\n")
    paths = [changed if path.name == "modeling.py" else path for path in default_model_module.remote_code_paths()]
    monkeypatch.setattr(default_model_module, "remote_code_paths", lambda: paths)
    assert not is_current_build(DEFAULT_MODEL_DIR)


def test_build_model_never_replaces_a_folder_it_did_not_make(tmp_path, capsys):
    """`--out` naming a user's own model folder: one line, exit 2, the folder untouched (only --force replaces it)."""
    own = tmp_path / "my-finetuned"
    own.mkdir()
    (own / "model.safetensors").write_bytes(b"a user's weights")
    assert main(["build-model", "--out", str(own), "--work", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not make" in err and "--force" in err
    assert (own / "model.safetensors").read_bytes() == b"a user's weights"


def test_the_built_model_answers_the_examples_as_recorded_and_gets_none_wrong(built, capsys):
    """`make predict`'s job: no example decided wrong (one inside the `uncertain` band is not decided: the README
    shows it as such), and the same answers (labels, scores, objects) as the record the fit wrote, which the README's
    table shows; so the heads, the dequantised tower and the processor all arrived."""
    record = json.loads((DEFAULT_MODEL_PARTS / "all_results.json").read_text())
    assert main(["predict", str(REPO / "examples"), "--format", "json"]) == 0
    results = {row["path"]: row for row in json.loads(capsys.readouterr().out)}
    assert len(results) == len(record["examples"]) == 8
    assert sum(row["label"] == "uncertain" for row in results.values()) <= 1  # decided, all but at most one
    for expected in record["examples"]:
        got = results[str(REPO / expected["path"])]
        assert got["label"] == expected["label"] in (expected_label(REPO / expected["path"]), "uncertain"), \
            expected["path"]
        assert got["score"] == pytest.approx(expected["score"], abs=1e-4)
        assert [item["label"] for item in got["objects"]] == [item["label"] for item in expected["objects"]]
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- default-model-examples:start -->")[1].split("<!-- default-model-examples:end -->")[0]
    for expected in record["examples"]:
        assert f"{expected['path']}" in block and f"{expected['score']:.3f}" in block


def test_the_built_folder_is_the_parts_plus_the_tower_and_loads_as_any_dualsight_folder(built):
    from dualsight_hf import load_pipeline
    from dualsight_hf.hub import remote_code_files

    for name in ("README.md", "all_results.json", "preprocessor_config.json"):
        assert (DEFAULT_MODEL_DIR / name).read_bytes() == (DEFAULT_MODEL_PARTS / name).read_bytes(), name
    assert sorted(path.name for path in DEFAULT_MODEL_DIR.glob("*.py")) == remote_code_files()
    with safe_open(DEFAULT_MODEL_DIR / "model.safetensors", "pt") as weights, \
            safe_open(DEFAULT_MODEL_PARTS / HEADS_FILE, "pt") as heads:
        for key in heads.keys():
            assert weights.get_tensor(key).equal(heads.get_tensor(key)), key
    answer = load_pipeline()(str(REPO / "examples" / "real" / "chelsea.png"), head="both")
    assert answer["decision"] == "real"


def test_the_shipped_card_is_the_one_the_package_writes_now(built):
    """The default model's card (`scripts/build_clip_model.py` writes it into the parts): this package's
    `build_model_card` gives it back word for word from the built folder."""
    from conftest import load_benchmark

    from dualsight_hf.hub import build_model_card

    script = load_benchmark("build_clip_model", "scripts")
    card = build_model_card(DEFAULT_MODEL_DIR, script.REPO_ID, **script.CARD)
    assert str(card) == (DEFAULT_MODEL_PARTS / "README.md").read_text()
