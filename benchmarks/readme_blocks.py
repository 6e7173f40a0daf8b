"""
The README's generated blocks: every number the README shows between `<!-- name:start -->` and `<!-- name:end -->`
is written there by a benchmark or a build script from its results, through this one function (a tool of
`benchmarks/` and `scripts/`, not of the package).
"""

from pathlib import Path


def write_marked_block(path, name: str, text: str) -> None:
    """
    Replace what stands between `<!-- name:start -->` and `<!-- name:end -->` in a Markdown file.

    Args:
        path (`str` or `Path`): the Markdown file (the README).
        name (`str`): the block's name.
        text (`str`): the new content (a trailing newline is added when missing).

    Raises:
        `ValueError`: the file has no such block.
    """
    path = Path(path)
    content = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in content or end not in content:
        raise ValueError(f"{path}: no {start} ... {end} block")
    head, rest = content.split(start, 1)
    path.write_text(head + start + "\n" + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])
