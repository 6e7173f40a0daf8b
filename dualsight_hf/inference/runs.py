"""
Running `dualsight predict` over many inputs: in one process, or as several ranks (spawned here with
`--num-processes`, or started by `accelerate launch` / `torchrun`), each writing its results as they come to its
shard, which rank 0 merges into one output with no duplicates and no gaps.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .results import ResultWriter, merge_shards, read_results, shard_path


@dataclass
class PredictionRun:
    """What a run did: inputs `scored`, inputs that `failed` (unreadable), and results `kept` from an earlier run
    (`--resume`)."""

    scored: int = 0
    failed: int = 0
    kept: int = 0


def spawn_ranks(argv: list[str], num_processes: int, output: Path) -> int:
    """
    `--num-processes N`: run `dualsight ARGV` as ranks 0..N-1 (`RANK`, `WORLD_SIZE`, the cores shared out through
    `OMP_NUM_THREADS`); if one fails, stop the others.

    Returns:
        `int`: the exit status: the highest of the ranks' (1: some inputs failed), or 2 when a rank failed.
    """
    for rank in range(num_processes):  # leftovers of an interrupted run must not be merged
        shard = shard_path(output, rank, num_processes)
        for stale in (shard, shard.with_suffix(".done")):
            stale.unlink(missing_ok=True)
    threads = max(1, (os.cpu_count() or 1) // num_processes)
    children = [
        subprocess.Popen([sys.executable, "-m", "dualsight_hf.cli", *argv],
                         env={**os.environ, "RANK": str(rank), "WORLD_SIZE": str(num_processes),
                              "OMP_NUM_THREADS": str(threads)})
        for rank in range(num_processes)
    ]
    while any(child.poll() is None for child in children):
        if any(child.poll() not in (None, 0, 1) for child in children):  # 1 only means some inputs failed
            for child in children:
                child.terminate()
            break
        time.sleep(0.2)
    codes = [child.wait() for child in children]
    if any(code not in (0, 1) for code in codes):
        print(f"dualsight: error: a prediction process failed (exit codes {codes}); {output} is incomplete",
              file=sys.stderr)
        return 2
    return max(codes)


def write_predictions(predictor, inputs, output: Path | None, output_format: str, resume: bool = False,
                      rank: int = 0, world_size: int = 1) -> PredictionRun:
    """
    Score `inputs` with `predictor` ([`Predictor.stream`]) and write every result as it comes.

    JSON Lines and CSV are appended to `output` as results come; JSON and the table are written whole at the end
    through a `.partial` file, so a crash loses nothing already written; with several ranks each writes its shard
    (JSON Lines) and rank 0 merges them. A line per unreadable input goes to standard error, and so does the
    progress bar where standard error is a terminal (a log file gets no bar), unless the results themselves stream
    onto that terminal (JSON Lines or CSV on standard output), where a bar would garble them.

    Args:
        predictor ([`Predictor`]): the model and its settings.
        inputs (`Callable[[], Iterable]`): the `(key, source)` stream (see `predictor.iter_inputs`).
        output (`Path`, *optional*): the result file; standard output when `None`.
        output_format (`str`): `table`, `json`, `jsonl` or `csv`.
        resume (`bool`, *optional*, defaults to `False`): keep the results `output` holds and score only the rest.
        rank, world_size (`int`, *optional*): this process's share.

    Returns:
        [`PredictionRun`]: counts for the whole run on rank 0 (after the merge), for this rank's share elsewhere.
    """
    previous = read_results(output, output_format) if resume else []
    skip = frozenset(r.path for r in previous)
    streams_to_terminal = output is None and output_format in ("jsonl", "csv") and sys.stdout.isatty()
    progress = rank == 0 and sys.stderr.isatty() and not streams_to_terminal
    if world_size > 1:
        target, target_format, append = shard_path(output, rank, world_size), "jsonl", False
    elif output is not None and output_format in ("jsonl", "csv"):
        target, target_format, append = output, output_format, bool(previous)
    else:  # json and table are written whole at the end: into a temporary file, so a crash loses nothing
        target, target_format, append = output, output_format, False
    written = target.with_name(target.name + ".partial") if target and target_format in ("json", "table") else target
    handle = written.open("a" if append else "w", newline="") if written else sys.stdout
    run = PredictionRun(kept=len(previous))
    try:
        writer = ResultWriter(handle, target_format, header=not append)
        if target_format in ("json", "table"):
            for result in previous:
                writer.write(result)
        for result in predictor.stream(inputs, rank, world_size, skip, progress=progress):
            writer.write(result)
            if result.error:
                run.failed += 1
                print(f"error: {result.error}", file=sys.stderr)
            else:
                run.scored += 1
        writer.close()
    finally:
        if target:
            handle.close()
    if written != target:
        os.replace(written, target)
    if world_size > 1:
        shard_path(output, rank, world_size).with_suffix(".done").touch()
        if rank == 0:
            new = merge_shards(output, world_size, output_format, previous)[len(previous):]
            run.failed, run.scored = sum(bool(r.error) for r in new), sum(not r.error for r in new)
    return run
