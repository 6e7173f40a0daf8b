"""benchmarks/clip_adaptation_probe.py: the README's table is the one its recorded run produces."""

import json

from conftest import REPO, load_benchmark

probe = load_benchmark("clip_adaptation_probe")


def test_the_readme_shows_the_recorded_probe():
    report = json.loads(probe.RESULTS.read_text())
    assert probe.markdown(report) in (REPO / "README.md").read_text()
    assert set(report["families"]) == set(load_benchmark("leave_one_family_out").FAMILIES)
    for curve in report["families"].values():
        assert [row["asked"] for row in curve["after"]] == list(probe.SHOTS)
