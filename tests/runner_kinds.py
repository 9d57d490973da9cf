"""Step kinds that exist only for the runner's tests: they do real file work through
fsspec, in-process, so they run on any storage including memory://."""

from __future__ import annotations

import json
import os
import time

import fsspec
from pydantic import Field

from bertflow.contracts.config import operational
from bertflow.infra.kinds import KINDS, Input, Params, StepKind, register

CALLS: list[str] = []  # step names, in the order this process ran them


class TextParams(Params):
    text: str
    copies: int = Field(default=1, ge=1)
    sleep: float = operational(0, ge=0)  # how long the step takes, not what it writes
    crash: bool = operational(False)  # an attempt that dies after writing: same folder, no output
    gate: str = operational("")  # a file: the step waits until it exists (a test says when)


class JoinParams(Params):
    separator: str = " "
    fail: bool = False
    hang: bool = False  # write a part, then wait to be killed


def _write(url: str, text: str) -> None:
    with fsspec.open(url, "w") as f:
        f.write(text)


def _read(url: str) -> str:
    with fsspec.open(url, "r") as f:
        return f.read()


@register
class TextKind(StepKind):
    name = "test_text"
    Params = TextParams

    def run(self, ctx):
        CALLS.append(ctx.step)
        started = time.time()
        time.sleep(ctx.params.sleep)
        while ctx.params.gate and not os.path.exists(ctx.params.gate):
            time.sleep(0.05)
        _write(f"{ctx.output}/text.txt", " ".join([ctx.params.text] * ctx.params.copies))
        _write(f"{ctx.output}/times.json", json.dumps([started, time.time()]))
        if ctx.params.crash:
            raise RuntimeError("crashed after writing")
        return {"words": ctx.params.copies * len(ctx.params.text.split())}


@register
class JoinKind(StepKind):
    name = "test_join"
    Params = JoinParams
    inputs = {"parts": Input(many=True), "title": Input(required=False)}

    def run(self, ctx):
        CALLS.append(ctx.step)
        parts = [_read(f"{u}/text.txt") for u in ctx.inputs["parts"]]
        if "title" in ctx.inputs:
            parts.insert(0, _read(f"{ctx.input('title')}/text.txt").upper())
        _write(f"{ctx.output}/part-0.txt", parts[0])  # half of the output, before failing
        if ctx.params.fail:
            raise RuntimeError("asked to fail")
        if ctx.params.hang:
            ctx.log.warning("HANGING pid=%d", os.getpid())  # on the terminal: a print goes to the step log
            time.sleep(600)
        _write(f"{ctx.output}/text.txt", ctx.params.separator.join(parts))
        return {"parts": len(parts)}


class ExamplesParams(Params):
    num_train: int = Field(default=64, ge=1)


@register
class ExamplesKind(StepKind):
    """Pretraining examples from a real book (tests.pretrain_examples), for a real
    `pretrain` step without the Beam jobs before it."""

    name = "test_examples"
    Params = ExamplesParams

    def run(self, ctx):
        from tests.pretrain_examples import write_examples

        write_examples(ctx.output, num_train=ctx.params.num_train, num_eval=8, num_shards=1, max_len=32)
        return {"train_examples": ctx.params.num_train}


TEST_KINDS = [TextKind, JoinKind, ExamplesKind]


def unregister() -> None:
    for k in TEST_KINDS:
        KINDS.pop(k.name, None)


if __name__ == "__main__":
    # The CLI with the test kinds registered, for tests that kill or interrupt a real run.
    import sys

    from bertflow.infra.cli import main

    sys.exit(main(sys.argv[1:]))
