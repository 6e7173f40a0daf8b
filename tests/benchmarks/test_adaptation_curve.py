"""benchmarks/adaptation_curve.py: the README's tables are the ones its recorded runs produce (no timed test)."""

import json

from conftest import REPO, load_benchmark

curve = load_benchmark("adaptation_curve")


def test_the_readme_shows_every_recorded_curve():
    files = sorted((REPO / "benchmarks" / "results").glob("adaptation_curve*.json"))
    assert files, "no recorded adaptation curve: run make adaptation-curve"
    readme = (REPO / "README.md").read_text()
    for path in files:
        report = json.loads(path.read_text())
        assert curve.markdown(report) in readme, path.name
        assert set(report["families"]) <= set(load_benchmark("leave_one_family_out").FAMILIES)


def test_the_table_names_its_bases():
    report = {"machine": {"cores": 2, "cpu": "X", "gpu": None, "torch": "2.13.0"}, "date": "2026-12-03",
              "other_images": 60, "variant": "clip", "families": {}}
    assert "(the CLIP model's heads fitted without the family" in curve.markdown(report)
    assert "Not measured yet: modern photoreal" in curve.markdown(report)
