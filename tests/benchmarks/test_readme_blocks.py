"""The one writer of the README's generated blocks."""

import pytest
from conftest import load_benchmark


def test_a_block_is_replaced_and_the_rest_of_the_file_kept(tmp_path):
    write_marked_block = load_benchmark("readme_blocks").write_marked_block
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- speed:start -->\nold table\n<!-- speed:end -->\nafter\n"
                      "<!-- other:start -->\nkept\n<!-- other:end -->\n")
    write_marked_block(readme, "speed", "| a | b |\n|---|---|")
    assert readme.read_text() == ("# Title\n<!-- speed:start -->\n| a | b |\n|---|---|\n<!-- speed:end -->\nafter\n"
                                  "<!-- other:start -->\nkept\n<!-- other:end -->\n")
    with pytest.raises(ValueError, match="no <!-- missing:start -->"):
        write_marked_block(readme, "missing", "x")
