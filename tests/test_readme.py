"""The README's Python examples run as written (offline, in the repository's folder), and what it says about the
`pipeline` calls is what they do."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SHARED

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_example_runs_as_written(number, tmp_path):
    block = BLOCKS[number]
    if "../shared" in block and not SHARED.exists():
        pytest.skip(f"needs {SHARED} (the project's shared folder), absent in this clone")
    script = tmp_path / "example.py"
    script.write_text(block)
    try:
        result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        shutil.rmtree(REPO / "out" / "new-model", ignore_errors=True)
    assert result.returncode == 0, f"README example {number + 1} failed:\n{block}\n{result.stderr[-3000:]}"
