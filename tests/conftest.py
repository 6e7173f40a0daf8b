"""Shared fixtures: tiny random models (no downloads), test images made on the fly, and ../shared when present."""

import shutil
from pathlib import Path

import pytest
from transformers import ConvNextConfig, MobileNetV2Config, ResNetConfig, ViTConfig

from dualsight_hf import DualSightConfig, DualSightForImageClassification, image_processor_for_backbone
from dualsight_hf.models.image_processing import image_processor_for_model
from dualsight_hf.testing_utils import AI_SOURCE_TYPE, C2paSigner, image_bytes, png_bytes, random_image  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

TINY_BACKBONES = {
    "resnet": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
    "mobilenet_v2": lambda: MobileNetV2Config(depth_multiplier=0.25, image_size=32),
    "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
    "vit": lambda: ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                             image_size=32, patch_size=8),
}
OBJECT_NAMES = {0: "person", 1: "car", 2: "dog"}


def load_benchmark(name: str, folder: str = "benchmarks"):
    """A script of benchmarks/ (or of another `folder` of scripts, e.g. `scripts`) imported as a module: they are
    scripts, not part of the package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_path(*parts) -> Path:
    """A path under ../shared, or skip the test with the reason when that folder is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data, present in CI and on the team's machines)")
    return path


def require_default_model() -> str:
    """The built default model's folder, or skip the test with what to run where `dualsight build-model` has not
    made it (`make test` does)."""
    from dualsight_hf.models import default_model

    if not (default_model.DEFAULT_MODEL_DIR / "model.safetensors").exists():
        pytest.skip(f"the default model is not built in {default_model.DEFAULT_MODEL_DIR}: run `dualsight build-model` "
                    "(make test does)")
    return str(default_model.default_model_dir())  # a build from other heads than the package's fails here


def tiny_config(backbone: str = "resnet", object_problem_type: str = "multi_label_classification",
                with_objects: bool = True, **kwargs) -> DualSightConfig:
    objects = OBJECT_NAMES if with_objects else None
    return DualSightConfig(backbone_config=TINY_BACKBONES[backbone](), object_id2label=objects,
                           object_problem_type=object_problem_type, **kwargs)


def save_tiny_model(folder: Path, backbone: str = "resnet", seed: int = 0, **kwargs) -> Path:
    """A tiny random DualSight model with its processor (32x32 input; with `artifact_stream`, also the crops),
    saved to `folder`."""
    import torch

    torch.manual_seed(seed)
    model = DualSightForImageClassification(tiny_config(backbone, **kwargs)).eval()
    model.save_pretrained(folder)
    semantic = image_processor_for_backbone(model.config.backbone_config, size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32}, crop_pct=1.0)
    image_processor_for_model(model.config, semantic).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """Three good images (JPEG, PNG, greyscale PNG) in a folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    random_image(seed=1).save(folder / "a.jpg")
    random_image(seed=2).save(folder / "b.png")
    random_image(seed=3, mode="L").save(folder / "c.png")
    return folder


@pytest.fixture
def many_images(tmp_path) -> Path:
    """Ten random PNGs and one file that is not an image (`05-broken.jpg`, HTML) in a folder."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10):
        random_image(40, 30, seed=i).save(folder / f"{i:02d}.png")
    (folder / "05-broken.jpg").write_bytes(b"<html>")
    return folder


@pytest.fixture(scope="session")
def artifact_model_dir(tmp_path_factory) -> Path:
    """A tiny random DualSight model with an artifact stream (2x2 crops of 16 pixels)."""
    return save_tiny_model(tmp_path_factory.mktemp("artifact-model"), artifact_stream={"crop_size": 16,
                                                                                      "crops_per_side": 2})


class PostgresServer:
    """A throw-away PostgreSQL server in a temporary folder (Debian's `initdb` / `pg_ctl`), on a Unix socket and a
    free local port; run as the `postgres` user when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self, bin_dir: Path):
        import os
        import pwd
        import socket
        import tempfile

        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="dualsight-postgres-"))  # not under pytest's 0700 tmp folders
        self.prefix = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "dualsight", "--no-sync",
                  "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", str(self.folder), "-p", str(self.port), "-U", "dualsight", "history")
        self.url = f"postgresql://dualsight@127.0.0.1:{self.port}/history"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run([*self.prefix, str(self.bin_dir / tool), *args], check=True, capture_output=True)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w", "start",
                  "-o", f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:

        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def postgres_bin_dir() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, or Debian's /usr/lib/postgresql/VERSION/bin."""

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres():
    """A running PostgreSQL server for the tests of the service's history (skipped where it cannot be had)."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (the serve extra)")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb / pg_ctl are not installed (Debian: apt-get install postgresql; "
                    "`make postgres` does it)")
    server = PostgresServer(bin_dir)
    yield server
    server.remove()


@pytest.fixture(scope="session")
def c2pa_signer() -> C2paSigner:
    pytest.importorskip("c2pa", reason="C2PA needs the provenance extra (c2pa-python)")
    pytest.importorskip("cryptography", reason="signing test images needs cryptography (the test extra)")
    return C2paSigner()


#: Makes `dualsight_hf` unimportable in a child Python (the situation of a user who loads a folder by remote code).
BLOCK_PACKAGE = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "dualsight_hf" or name.startswith("dualsight_hf."):
            raise ImportError("dualsight_hf is blocked in this test")
sys.meta_path.insert(0, _Block())
try:
    import dualsight_hf
    raise SystemExit("dualsight_hf should not be importable here")
except ImportError:
    pass
"""

LOAD_AND_PREDICT = BLOCK_PACKAGE + """
import json
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline
from PIL import Image
model_id, image_path = sys.argv[1], sys.argv[2]
config = AutoConfig.from_pretrained(model_id, trust_remote_code=True)
model = AutoModelForImageClassification.from_pretrained(model_id, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(model_id, backend="pil", trust_remote_code=True)
inputs = processor(Image.open(image_path).convert("RGB"), return_tensors="pt")
headless = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
with torch.no_grad():
    out = model(**inputs)
    features = headless(**inputs)
classifier = pipeline("image-classification", model=model_id, trust_remote_code=True)
print(json.dumps({
    "config_class": type(config).__module__,
    "model_class": type(model).__name__,
    "headless_class": type(headless).__name__,
    "pooled": features.pooler_output.tolist(),
    "pipeline_class": type(classifier).__name__,
    "processor_class": type(processor).__module__ + "." + type(processor).__name__,
    "inputs": sorted(inputs),
    "logits": out.logits.tolist(),
    "object_logits": out.object_logits.tolist(),
    "both": classifier(image_path, head="both", object_threshold=0.0),
}))
"""


def run_without_package(model_id: str, image_path: str, env: dict | None = None) -> dict:
    """Load `model_id` by remote code in a Python that cannot import `dualsight_hf`, score `image_path`: what it
    got (classes, logits, the pipeline's answer)."""
    import json
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, model_id, image_path], capture_output=True,
                            text=True, env={**os.environ, **(env or {})}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def reference(model_dir, image_path):
    """The installed package's raw outputs, the headless model's pooled feature and the `head="both"` answer for one
    image: what remote code must match."""
    import torch

    from dualsight_hf import load_image, load_pipeline

    classifier = load_pipeline(model_dir)
    inputs = classifier.image_processor(load_image(image_path), return_tensors="pt")
    with torch.no_grad():
        out = classifier.model(**inputs)
        pooled = classifier.model.dualsight(**inputs).pooler_output
    return out, pooled, classifier(str(image_path), head="both", object_threshold=0.0)


def assert_same(remote: dict, model_dir, image_path):
    """`remote` (from [`run_without_package`]) came from the folder's remote code and equals the package's answer."""
    import torch

    out, pooled, both = reference(model_dir, image_path)
    assert remote["model_class"] == "DualSightForImageClassification" and remote["headless_class"] == "DualSightModel"
    assert remote["config_class"].startswith("transformers_modules")
    assert remote["pipeline_class"] == "DualSightImageClassificationPipeline"
    torch.testing.assert_close(torch.tensor(remote["logits"]), out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(remote["object_logits"]), out.object_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(remote["pooled"]), pooled, atol=1e-5, rtol=1e-5)
    assert [r["label"] for r in remote["both"]["authenticity"]] == [r["label"] for r in both["authenticity"]]
    assert [r["label"] for r in remote["both"]["objects"]] == [r["label"] for r in both["objects"]]


def lay_out_as_hub_download(model_dir, hf_home, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """Copy a model folder into a Hugging Face cache exactly as `snapshot_download` leaves it."""
    repo_cache = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_cache / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """An image folder of 4 `real` and 3 `fake` random PNGs, one level down (`real/nested/0.png`)."""
    root = tmp_path / "folder"
    for label, count in (("real", 4), ("fake", 3)):
        (root / label / "nested").mkdir(parents=True)
        for i in range(count):
            random_image(seed=i + (10 if label == "fake" else 0)).save(root / label / "nested" / f"{i}.png")
    return root
