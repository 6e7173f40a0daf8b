"""benchmarks/startup.py: the README's start-up table is the one its recorded run produces (no timed test here)."""

import json

from conftest import REPO, load_benchmark


def test_the_readme_shows_the_recorded_startup_measurement():
    benchmark = load_benchmark("startup")
    files = sorted((REPO / "benchmarks" / "results").glob("startup-*.json"))
    assert files, "no recorded start-up measurement: run make startup"
    readme = (REPO / "README.md").read_text()
    assert any(benchmark.markdown(json.loads(path.read_text())) in readme for path in files)


def test_the_table_names_what_was_measured():
    benchmark = load_benchmark("startup")
    report = {"machine": {"cores": 2, "cpu": "X", "gpu": None, "torch": "2.13.0"}, "date": "2026-12-03",
              "commit": "abc1234",
              "startup": {"predict_one_image_seconds": {"default": 6.5, "mobile": 4.25}, "import_seconds": 3.0,
                          "torchao_installed": False, "transformers_modeling_import_seconds": 2.5,
                          "runs": {"predict": {"default": [6.0, 6.5, 7.0], "mobile": [4.0, 4.25, 5.0]},
                                   "import": [3.0, 3.0, 3.1]}},
              "evaluate": {"quick_seconds": 120.0, "images": 640, "quick_passes": 4, "full_passes": 17,
                           "full_estimate_seconds": 510.0}}
    table = benchmark.markdown(report)
    assert ("| `dualsight predict --model default` on one image, the default model (CLIP ViT-B/16), command to result "
            "(median of 3) | 6.5 s |") in table
    assert "| `dualsight predict --model mobile` on one image, the mobile model (MobileNetV2)" in table
    assert "(median of 3) | 4.2 s |" in table
    assert "| `import transformers.modeling_utils` alone" in table and "torch.distributed.tensor) | 2.5 s |" in table
    assert "| `dualsight evaluate --quick`, 640 test images x 4 passes | 2.0 min |" in table
    assert "(17 passes), estimated from the same rate | 8.5 min |" in table and "torchao is not installed" in table
