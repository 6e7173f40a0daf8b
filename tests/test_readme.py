"""The README's Python examples run as written (offline, in the repository's folder), its shell commands that need
nothing but the repository run word for word and every other one parses, and what it says about the `pipeline` calls
is what they do."""

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED, require_default_model

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_python_example_runs_as_written(number, tmp_path):
    block = BLOCKS[number]
    if "../shared" in block and not SHARED.exists():
        pytest.skip(f"needs {SHARED} (the project's shared folder), absent in this clone")
    if "load_pipeline()" in block or "DEFAULT_MODEL_DIR" in block:
        require_default_model()
    script = tmp_path / "example.py"
    script.write_text(block)
    try:
        result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        shutil.rmtree(REPO / "out" / "new-model", ignore_errors=True)
    assert result.returncode == 0, f"README example {number + 1} failed:\n{block}\n{result.stderr[-3000:]}"


# ----------------------------------------------------------------------------------------------- shell examples
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def shell_commands() -> list[str]:
    """Every command of the README's shell blocks, continuation lines joined, comments dropped. A synopsis's optional
    part `[--format table|json]` stands for its first form (`--format table`)."""
    commands = []
    for block in SHELL_BLOCKS:
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\[(--[^\]]*)\]", lambda m: re.sub(r"(\S+?)\|\S+", r"\1", m.group(1)), line)
            words = shlex.split(line, comments=True)
            if words:
                commands.append(" ".join(shlex.quote(word) for word in words))
    return commands


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))


def package_extras() -> set[str]:
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return set(config["options.extras_require"])


def without_abbreviations(parser: argparse.ArgumentParser) -> None:
    """The README must spell options out: a prefix that argparse would accept (`--target-fp`) fails here."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                without_abbreviations(child)


def parses(parser: argparse.ArgumentParser, args: list[str], command: str):
    """`parser.parse_args(args)`, options spelt out in full, with argparse's exit turned into a test failure naming
    the README command."""
    without_abbreviations(parser)
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error):
            return parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"README command does not parse: {command}\n{error.getvalue()}")


def check_python(args: list[str], command: str) -> None:
    """`python SCRIPT ARGS` or `python -m MODULE ARGS`: the script exists and its own parser accepts the arguments."""
    from dualsight_hf.cli import add_push_arguments, build_parser
    from dualsight_hf.training.trainer import parse_arguments

    if args[:2] == ["-m", "dualsight_hf.cli"]:
        parses(build_parser(), args[2:], command)
        return
    script, rest = args[0], args[1:]
    assert (REPO / script).is_file(), f"README runs {script}, which the repository does not have: {command}"
    if script == "train.py":
        try:
            parse_arguments(rest)
        except (SystemExit, ValueError) as error:
            pytest.fail(f"README command does not parse: {command}\n{error}")
    elif script == "push_to_hub.py":
        parser = argparse.ArgumentParser()
        add_push_arguments(parser)
        parses(parser, rest, command)


@pytest.mark.parametrize("command", shell_commands())
def test_shell_example_is_a_command_the_repository_has(command):
    """Each command of the README's shell examples names what exists, with arguments its parser accepts: make
    targets of the Makefile, extras of setup.cfg, `dualsight` sub-commands and options, train.py's and
    push_to_hub.py's arguments, and what `accelerate launch` and `torchrun` start. (Parsing only: what the commands
    do is tested by the tests of each command; the main job by test_default_model.)"""
    from dualsight_hf.cli import build_parser

    program, *args = shlex.split(command)
    if program == "make":
        assert set(args) <= makefile_targets(), f"no such make target: {command}"
    elif program == "pip":
        for requirement in args[1:]:
            extras = re.fullmatch(r"\.\[(.*)\]", requirement)
            if extras:
                assert set(extras.group(1).split(",")) <= package_extras(), f"no such extra: {command}"
            else:
                assert requirement in ("-e", ".", "torch==2.13.0"), f"unexpected requirement: {command}"
    elif program == "dualsight" and args[0] == "train":  # train.py's own arguments, passed on as they are
        check_python(["train.py", *args[1:]], command)
    elif program == "dualsight":
        parses(build_parser(), args, command)
    elif program == "python":
        check_python(args, command)
    elif program == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        launched = parses(launch_command_parser(), args[1:], command)
        module = ["-m"] if launched.module else []
        check_python(module + [launched.training_script, *launched.training_script_args], command)
    elif program == "torchrun":
        from torch.distributed.run import get_args_parser

        launched = parses(get_args_parser(), args, command)
        check_python([launched.training_script, *launched.training_script_args], command)
    elif program == "curl":
        for word in args:
            if word.startswith("file=@"):
                assert (REPO / word.removeprefix("file=@")).is_file(), f"no such file: {command}"
        assert any(word.startswith("http://127.0.0.1:8000/v1/") for word in args)
    else:
        pytest.fail(f"a README command this test does not know how to check: {command}")


# -------------------------------------------------------------------------------- shell examples, run as written
#: options whose value a command writes (it need not exist beforehand)
OUTPUT_OPTIONS = {"--out", "--output", "--output_dir"}
#: the README's commands that are not run here, and why; each is tested where said
LONG_OR_SERVING = {
    "dualsight train recipes/mobile_model.yaml": "trains the mobile model for minutes (tests/training runs train.py "
                                                "on tiny data)",
    "dualsight evaluate --data ../shared/data/real-vs-ai/manifest.csv --out report/":
        "17 passes over 641 test images, about 5 minutes here (tests/evaluation runs the command on a small manifest)",
    "dualsight demo": "a server (tests/test_demo_browser.py starts it)",
    "python app.py": "a server (tests/test_demo_browser.py starts it)",
    "dualsight serve": "a server (tests/serve/test_serve_cli.py starts it)",
    "dualsight history export --format csv --output history.csv": "reads a history the service wrote "
                                                                  "(tests/serve/test_serve_cli.py)",
}


def not_run_because(command: str) -> str | None:
    """Why a README command is not run by [`test_shell_example_runs_as_written`], or `None` when it is: set-up and
    launchers (make, pip, accelerate, torchrun), the service's `curl`, `LONG_OR_SERVING`, and commands naming the
    user's own files (`photo.jpg`, `manifest.csv`, `DIR`, a Hub id), which this repository does not have."""
    program, *args = shlex.split(command)
    if program in ("make", "pip", "accelerate", "torchrun", "curl"):
        return f"{program}: set-up, a launcher or the running service"
    if command in LONG_OR_SERVING:
        return LONG_OR_SERVING[command]
    values = [word for previous, word in zip(["", *args], args) if previous not in OUTPUT_OPTIONS]
    missing = [word for word in values if not word.startswith("-") and re.search(r"/|\.[a-z]+$", word)
               and not (REPO / word).exists()]
    return f"names the user's files ({', '.join(missing)})" if missing else None


RUN_AS_WRITTEN = sorted({command for command in shell_commands() if not_run_because(command) is None})


def test_the_readme_commands_that_can_run_here_are_run():
    """The main job (predict with the default and the mobile model), the offline training example, the export and
    the build are run as written; that list is not silently emptied by a change of the rules."""
    assert {"dualsight predict examples/", "dualsight predict examples/ --model mobile", "dualsight build-model",
            "dualsight export --format onnx --out model.onnx"} <= set(RUN_AS_WRITTEN)
    assert any(command.startswith("python train.py --backbone ../shared/") for command in RUN_AS_WRITTEN)


@pytest.mark.parametrize("command", RUN_AS_WRITTEN)
def test_shell_example_runs_as_written(command, tmp_path):
    """The command, word for word, in a folder laid out as the repository (its examples, train.py and recipes,
    with ../shared beside it), with the installed `dualsight` and this Python: it succeeds and writes what it says."""
    if "../shared" in command and not SHARED.exists():
        pytest.skip(f"needs {SHARED} (the project's shared folder), absent in this clone")
    if command.startswith("dualsight") and "--model" not in command:
        require_default_model()  # `make test` builds it: `build-model` then answers that it is built, offline
    work = tmp_path / "repository"
    work.mkdir()
    for name in ("examples", "train.py", "recipes"):
        (work / name).symlink_to(REPO / name)
    if SHARED.exists():
        (tmp_path / "shared").symlink_to(SHARED)
    program, *args = shlex.split(command)
    executable = {"dualsight": str(Path(sys.executable).with_name("dualsight")), "python": sys.executable}[program]
    result = subprocess.run([executable, *args], cwd=work, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, f"README command failed: {command}\n{result.stderr[-3000:]}"
    for option, value in zip(args, args[1:]):
        if option in OUTPUT_OPTIONS:
            assert (work / value).exists(), f"{command} did not write {value}"
    if args[0] == "build-model":
        assert "already built" in result.stderr, result.stderr
    if args[0] == "predict":
        examples = sorted(path.relative_to(REPO).as_posix() for path in (REPO / "examples").rglob("*")
                          if path.suffix in (".jpg", ".png"))
        assert len(examples) == 8
        assert all(name in result.stdout for name in examples), result.stdout
        # nothing but the command's own summary: no library logs, warnings, load reports or bars (not a terminal)
        assert result.stderr == "8 scored, 0 failed\n", result.stderr
