"""Every `>>>` example in the package's docstrings runs and prints what it shows, read with transformers' doctest
parser (examples inside Markdown code fences, as transformers writes its own)."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
from conftest import require_default_model
from transformers.testing_utils import HfDocTestParser

import dualsight_hf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def examples(module_name: str) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(parser=HfDocTestParser())
    return [test for test in finder.find(importlib.import_module(module_name)) if test.examples]


MODULES = [info.name for info in pkgutil.walk_packages(dualsight_hf.__path__, "dualsight_hf.")]
MODULES_WITH_EXAMPLES = sorted(name for name in ["dualsight_hf", *MODULES] if examples(name))


def test_the_public_modules_have_examples():
    assert {"dualsight_hf", "dualsight_hf.models.modeling", "dualsight_hf.models.configuration",
            "dualsight_hf.models.pipeline", "dualsight_hf.inference.predictor"} <= set(MODULES_WITH_EXAMPLES)


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    tests = examples(module_name)
    sources = "\n".join(example.source for test in tests for example in test.examples)
    if "../shared" in sources and not SHARED.is_dir():
        pytest.skip(f"{module_name}'s examples read ../shared, which this checkout does not have beside it")
    if "the default model" in sources:
        require_default_model()
    # examples name the repository's files (examples/, ../shared) and may write folders: run them in a scratch
    # folder laid out like a clone beside shared/
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "examples").symlink_to(REPO / "examples")
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED.resolve())
    monkeypatch.chdir(tmp_path / "repo")
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    summary = runner.summarize(verbose=False)
    assert summary.failed == 0, f"{summary.failed} of {summary.attempted} examples in {module_name} failed (see above)"
