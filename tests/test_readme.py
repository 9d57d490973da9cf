"""Every command in README.md's shell blocks (```sh, ```bash, ```console), run as a reader
would type it, with .venv's `bertflow`, in a folder holding a copy of workflows.yaml and
the sample data. What is run how is said in the README itself (the paragraph after "The
command line"), so a reader sees it too:

- `bertflow run ...` gets `--dry-run` (the plan, the spec and flags checked, no work);
  `s3://` URLs go to the loopback S3 server of tests/conftest.py.
- a line whose comment begins `needs ` (`# needs a cluster`, `# needs the bucket`) is
  parsed, not run: argparse takes its flags and the spec loads its workflow.
- `make TARGET`: `make -n TARGET` in the repository (nothing runs), and the `bertflow`
  lines of its recipe as above; the whole demo is `make demo` itself.
- a ```console block's `$ ` lines are run and what they print must be the lines below.
- otherwise the command must exit 0, or, reading a run's record where there is none,
  print just the line that says so.

A `bertflow ...` command named in the prose (outside the blocks) is parsed: its verb must
exist and its flags parse, a capitalised placeholder (`WORKFLOW`) read as the demo.

A wrong command (an unknown flag, a misspelled workflow) fails its test:
`test_a_wrong_command_fails` checks that on purpose-made wrong lines.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # .venv's, or .venv-latest's under `make test-latest`
FENCE = re.compile(r"^```(sh|bash|console)[^\n]*\n(.*?)^```", re.M | re.S)
NEEDS = re.compile(r"^needs\b")
NO_RECORD = re.compile(r"^error: no run of workflow '[^']+' recorded under ")


@dataclasses.dataclass
class Command:
    line: int              # in README.md
    text: str              # as written, without its comment
    comment: str = ""
    expected: list[str] | None = None  # a console block's output

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def commands(readme: str) -> list[Command]:
    found: list[Command] = []
    for block in FENCE.finditer(readme):
        first = readme.count("\n", 0, block.start(2)) + 1
        lines = block.group(2).splitlines()
        if block.group(1) == "console":
            for i, line in enumerate(lines):
                if line.startswith("$ "):
                    out = []
                    for nxt in lines[i + 1:]:
                        if nxt.startswith("$ "):
                            break
                        out.append(nxt.rstrip())
                    found.append(Command(first + i, line[2:].strip(), expected=out))
            continue
        for i, line in enumerate(lines):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            text, _, comment = line.partition(" #")
            found.append(Command(first + i, text.strip(), comment.strip()))
    return found


INLINE = re.compile(r"`(bertflow [a-z][^`\n]*)`")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]+$")  # WORKFLOW, DIR: the reader's own value


def inline_commands(readme: str) -> list[Command]:
    """The `bertflow ...` commands the prose names, outside the shell blocks."""
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), readme)
    return [Command(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in INLINE.finditer(prose)]


README_COMMANDS = commands(README.read_text())
INLINE_COMMANDS = inline_commands(README.read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder as a reader's clone holds it for these commands: workflows.yaml and data/."""
    where = tmp_path_factory.mktemp("readme")
    shutil.copy(ROOT / "workflows.yaml", where / "workflows.yaml")
    (where / "data").symlink_to(ROOT / "data")
    return where


def environment(work: Path) -> dict[str, str]:
    # The digest cache in the folder, not in the home of whoever runs the tests.
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "BERTFLOW_CACHE": str(work / "cache")}


def shell(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, [line.rstrip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]


def parse_only(cmd: Command, work: Path) -> None:
    """A command that needs what a test has not (a cluster, a bucket): its flags and its
    workflow must be right."""
    argv = cmd.argv
    if argv[0] != "bertflow":
        pytest.skip(f"{cmd}: not a bertflow command, and it {cmd.comment}")
    from bertflow.infra import cli
    from bertflow.infra.spec import SpecError, load

    try:
        args = cli._parser().parse_args(argv[1:])
    except SystemExit as e:
        raise AssertionError(f"{cmd}: bertflow refuses its arguments (exit {e.code})") from None
    path = args.file if os.path.isabs(args.file) else str(work / args.file)
    try:
        spec = load(path, args.set, args.storage, getattr(args, "workflow", None))
        if getattr(args, "workflow", None):
            spec.workflow(args.workflow)
    except SpecError as e:
        raise AssertionError(f"{cmd}: {'; '.join(e.errors)}") from None


def subcommand(argv: list[str]) -> str | None:
    """The bertflow command ``argv`` names (options may come before it: `-f FILE run`),
    None when bertflow would refuse it (the real command then says how)."""
    from bertflow.infra import cli

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return cli._parser().parse_args(argv[1:]).command
    except SystemExit:
        return None


def init_before(cmd: Command, work: Path, env: dict[str, str]) -> None:
    """The README's `bertflow init DIR` lines above ``cmd`` whose folder is not there yet:
    a command may read what one of them writes (`-f my-bert/workflows.yaml`), and a test
    may run alone."""
    for earlier in README_COMMANDS:
        argv = earlier.argv
        if earlier.line < cmd.line and argv[:2] == ["bertflow", "init"]:
            folder = work / (argv[2] if len(argv) > 2 else ".")
            if not (folder / "workflows.yaml").exists():
                code, out = shell(argv, work, env)
                assert code == 0, f"{earlier}: exit {code}:\n" + "\n".join(out[-20:])


def bertflow(cmd: Command, argv: list[str], work: Path, env: dict[str, str]) -> None:
    if subcommand(argv) != "init":
        init_before(cmd, work, env)
    if subcommand(argv) == "run" and "--dry-run" not in argv:
        argv = [*argv, "--dry-run"]
    code, out = shell(argv, work, env)
    if code == 0:
        return
    # A command that reads a run's record (status --run, report) finds none in a fresh folder.
    assert code == 1 and len(out) == 1 and NO_RECORD.match(out[0]), \
        f"{cmd}: {shlex.join(argv)} exited {code}:\n" + "\n".join(out[-20:])


def check(cmd: Command, work: Path, request=None) -> None:
    """Run ``cmd`` as the module's docstring says; AssertionError when it is wrong."""
    if NEEDS.match(cmd.comment):
        return parse_only(cmd, work)
    argv = cmd.argv
    if any(a.startswith("s3://") for a in argv):
        assert request is not None, f"{cmd}: an s3:// command needs the loopback S3 server"
        request.getfixturevalue("s3_endpoint")  # sets AWS_ENDPOINT_URL & co. in os.environ
        import s3fs

        fs = s3fs.S3FileSystem()
        for bucket in {a[len("s3://"):].split("/")[0] for a in argv if a.startswith("s3://")}:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
        s3fs.S3FileSystem.clear_instance_cache()
    env = environment(work)
    if cmd.expected is not None:
        code, out = shell(argv, work, env)
        assert out == [line for line in cmd.expected if line.strip()], \
            f"{cmd}: printed (exit {code}):\n" + "\n".join(out) + "\nREADME shows:\n" + "\n".join(cmd.expected)
        return
    if argv[0] == "make":
        code, out = shell(["make", "-n", *argv[1:]], ROOT, env)
        assert code == 0, f"{cmd}: make -n: exit {code}\n" + "\n".join(out)
        # The recipe's other lines (an install, when .venv is older than the lock) are
        # make's to run; a bertflow line is the README's command in other words.
        recipe = [shlex.split(line) for line in out if Path(line.split(" ", 1)[0]).name == "bertflow"]
        for argv in recipe:
            bertflow(cmd, ["bertflow", *argv[1:]], work, env)
        return
    if argv[0] == "bertflow":
        return bertflow(cmd, argv, work, env)
    code, out = shell(argv, work, env)
    assert code == 0, f"{cmd}: exit {code}:\n" + "\n".join(out[-20:])


def test_the_readme_has_its_commands():
    texts = [c.text for c in README_COMMANDS]
    # The blocks the page is about; a FENCE that stopped matching would leave none.
    assert "make demo" in texts and "bertflow run demo --dry-run" in texts
    assert any(c.expected for c in README_COMMANDS), "the example error's console block"
    assert sum(bool(NEEDS.match(c.comment)) for c in README_COMMANDS) >= 2


@pytest.mark.parametrize("cmd", README_COMMANDS, ids=[f"line{c.line}" for c in README_COMMANDS])
def test_readme_command(cmd, work, request):
    check(cmd, work, request)


def check_inline(cmd: Command, work: Path) -> None:
    """A command named in the prose: its verb is bertflow's; with arguments (a placeholder
    in capitals standing for the demo's), bertflow takes them and the spec has the workflow."""
    from bertflow.infra import cli

    verb = cmd.argv[1]
    verbs = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert verb in verbs, f"{cmd}: bertflow has no command {verb!r} (it has {', '.join(verbs)})"
    if len(cmd.argv) > 2:
        text = shlex.join("demo" if PLACEHOLDER.match(a) else a for a in cmd.argv)
        parse_only(dataclasses.replace(cmd, text=text), work)


@pytest.mark.parametrize("cmd", INLINE_COMMANDS, ids=[f"line{c.line}" for c in INLINE_COMMANDS])
def test_readme_prose_command(cmd, work):
    check_inline(cmd, work)


def test_a_wrong_prose_command_fails(work):
    for text in ("bertflow stats demo", "bertflow status demo --runs latest", "bertflow submit WORKFLOW --adress x"):
        with pytest.raises(AssertionError):
            check_inline(Command(0, text), work)


@pytest.mark.parametrize("cmd", [
    Command(0, "bertflow run demo --no-such-flag"),
    Command(0, "bertflow run demoo"),
    Command(0, "bertflow -f nosuch.yaml run demo"),
    Command(0, "bertflow status demo --run"),
    Command(0, "bertflow submit bert-base --adress http://head:8265", "needs a cluster"),
    Command(0, "bertflow submit bert-bass --address http://head:8265", "needs a cluster"),
    Command(0, "make demoo"),
    Command(0, "python -m bertflow.pipelines.no_such_job --help"),
    Command(0, "bertflow validate demo --set examples.dupe_factor=0",
            expected=["error: workflows.demo.steps.examples.params.dupe_factor: must be >= 1 (line 1)"]),
], ids=lambda c: c.text)
def test_a_wrong_command_fails(cmd, work):
    with pytest.raises(AssertionError):
        check(cmd, work)
