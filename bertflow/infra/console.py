"""What `bertflow run` writes to the terminal: the runner's own lines, progress, the end.

    console = Console(sys.stdout, verbose=False)
    with console.attached():                 # the logging handler, engine output to the step logs
        runner = Runner(workflow, console=console)
        outcomes = runner.run()
    console.summary(runner, outcomes)

On the terminal: the plan (a line per step), one line when a step starts and one when it
ends (its counters rounded), warnings and errors of bertflow's own code, and a progress
bar per running step (tqdm; on a pipe or a file a plain line when its first progress
shows and then every ``PLAIN_EVERY`` seconds, never carriage returns). Colour only when
the stream is a terminal. What the engines log (Ray, Ray Train, Beam, gcsfs, the step
kinds' own detail) and whatever they print (a local Ray forwards its workers' output to
this process) goes to the running step's log, ``_logs/step.log``; ``verbose`` brings it
back to the terminal. Two engine lines stay on the terminal whatever: Dataflow's link to
the job's console page, and an uncaught error's traceback.

A step's progress comes from what it writes as it goes, read by its kind's ``progress``
(``bertflow.infra.kinds.base.StepKind.progress``): the same figures ``bertflow status``
shows, whether the work runs here or on a cluster.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import time
from typing import Callable, TextIO

PLAIN_EVERY = 30.0  # seconds between a running step's progress lines when not on a terminal
POLL_EVERY = 1.0  # seconds between reads of a running step's progress files on a terminal
CONSOLE = "console"  # a log record with this attribute is one of the runner's own lines: its style
# Engine records that stay on the terminal: the link to a Dataflow job's page.
KEEP = ("console.cloud.google.com/dataflow",)
STYLES = {"start": "\033[1m", "done": "\033[32m", "reused": "\033[2m", "failed": "\033[31m", "warning": "\033[33m"}
RESET = "\033[0m"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # what Ray colours its relayed lines' prefixes with


def own(record: logging.LogRecord) -> bool:
    """Whether a record is the project's own line for the terminal: one the runner marks
    (``extra={"console": STYLE}``), or a warning or error of bertflow's code, or the
    Dataflow job's link."""
    if hasattr(record, CONSOLE):
        return True
    if record.name.split(".")[0] == "bertflow" and record.levelno >= logging.WARNING:
        return True
    return any(k in record.getMessage() for k in KEEP)


class Console:
    def __init__(self, stream: TextIO | None = None, verbose: bool = False, color: bool | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.verbose = verbose
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.color = self.tty if color is None else color
        self._lock = threading.RLock()
        self._watched: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lines -------------------------------------------------------------------------

    def line(self, text: str, style: str | None = None) -> None:
        if self.color and style in STYLES:
            text = f"{STYLES[style]}{text}{RESET}"
        with self._lock:
            if self._bars():
                from tqdm import tqdm

                tqdm.write(text, file=self.stream)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def handler(self) -> logging.Handler:
        console = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    text = record.getMessage()
                    if record.exc_info and not hasattr(record, CONSOLE):
                        text += "\n" + logging.Formatter().formatException(record.exc_info)
                    style = getattr(record, CONSOLE, None)
                    if style is None and record.levelno >= logging.WARNING:
                        style = "failed" if record.levelno >= logging.ERROR else "warning"
                    stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
                    name = "" if hasattr(record, CONSOLE) or record.name.startswith("bertflow") else f"{record.name}: "
                    console.line(f"{stamp} {name}{text}", style)
                except Exception:  # noqa: BLE001 - logging's own rule: a handler never raises
                    self.handleError(record)

        h = Handler(level=logging.INFO)
        if not self.verbose:
            h.addFilter(own)
        return h

    @contextlib.contextmanager
    def attached(self):
        """While a run runs: this console's handler on the root logger and, unless verbose,
        what is printed turned into log records that land in the running step's log:
        ``sys.stdout``/``sys.stderr`` (``engine.stdout``, ``engine.stderr``: Ray's relay of
        its workers' output among them) and, when this console writes to the process's
        own stdout, file descriptors 1 and 2 too (``engine.output``: gRPC's and Ray's C++
        logs, child processes), the console's lines going to a copy of the terminal's."""
        root = logging.getLogger()
        handler = self.handler()
        root.addHandler(handler)
        saved, fds = (sys.stdout, sys.stderr), None
        if not self.verbose:
            fds = self._redirect_fds()
            sys.stdout = LogStream(logging.getLogger("engine.stdout"), logging.INFO)
            sys.stderr = LogStream(logging.getLogger("engine.stderr"), logging.WARNING)
        try:
            yield self
        finally:
            self.stop()
            for s in (sys.stdout, sys.stderr):
                if isinstance(s, LogStream):
                    s.flush()
            sys.stdout, sys.stderr = saved
            if fds is not None:
                self.stream.flush()
                for fd, copy in fds.items():
                    os.dup2(copy, fd)
                    os.close(copy)
                self.stream = saved[0]
            root.removeHandler(handler)

    def _redirect_fds(self) -> dict[int, int] | None:
        """File descriptors 1 and 2 into a pipe whose lines a thread logs; this console then
        writes to a copy of fd 1. Only when the console's stream is fd 1 (not in a test's
        captured stream). The reading thread lives as long as the process: a child that
        still holds the pipe never blocks on it."""
        try:
            if self.stream.fileno() != 1:
                return None
        except (AttributeError, OSError, ValueError):
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        copies = {1: os.dup(1), 2: os.dup(2)}
        read, write = os.pipe()
        for fd in (1, 2):
            os.dup2(write, fd)
        os.close(write)
        self.stream = open(os.dup(copies[1]), "w", buffering=1, encoding=getattr(self.stream, "encoding", None))
        out = logging.getLogger("engine.output")

        def relay() -> None:
            with open(read, "rb") as pipe:
                for raw in pipe:
                    line = ANSI.sub("", raw.decode(errors="replace")).rstrip()
                    if line.strip():
                        out.info(line)

        threading.Thread(target=relay, name="console-fds", daemon=True).start()
        return copies

    # -- progress ----------------------------------------------------------------------

    def watch(self, name: str, read: Callable[[], dict | None]) -> None:
        """Show the progress of step ``name`` while it runs: ``read()`` returns
        ``{"n", "total" (or None), "unit", "text"}`` or None while there is nothing yet."""
        with self._lock:
            self._watched[name] = {"read": read, "bar": None, "shown": 0.0}
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._poll, name="console-progress", daemon=True)
                self._thread.start()

    def unwatch(self, name: str) -> None:
        with self._lock:
            w = self._watched.pop(name, None)
        if w and w.get("bar") is not None:
            w["bar"].close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for name in list(self._watched):
            self.unwatch(name)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_EVERY):
            with self._lock:
                watched = list(self._watched.items())
            for name, w in watched:
                try:
                    p = w["read"]()
                except Exception as e:  # noqa: BLE001 - a file being written, a store hiccup: next time
                    logging.getLogger("bertflow.console").debug("progress of %s: %s", name, e)
                    continue
                if p:
                    self._show(name, w, p)

    def _show(self, name: str, w: dict, p: dict) -> None:
        if self.tty:
            from tqdm import tqdm

            with self._lock:
                if name not in self._watched:
                    return
                if w["bar"] is None:
                    # initial: the rate counts from the bar's first reading, not from zero
                    w["bar"] = tqdm(total=p.get("total"), initial=p["n"], desc=name, unit=p.get("unit", "it"),
                                    file=self.stream, dynamic_ncols=True, leave=False, position=len(self._bars()))
                bar = w["bar"]
                if p.get("total") != bar.total:
                    bar.total = p.get("total")
                bar.n = p["n"]
                bar.set_postfix_str(p.get("text", ""), refresh=False)
                bar.refresh()
            return
        now, text = time.time(), plain(name, p)
        if w["shown"] and (now - w["shown"] < PLAIN_EVERY or text == w.get("text")):
            return  # not yet, or nothing new to say
        w["shown"], w["text"] = now, text
        self.line(text)

    def _bars(self) -> list:
        return [w["bar"] for w in self._watched.values() if w.get("bar") is not None]

    # -- the end -----------------------------------------------------------------------

    def summary(self, runner, outcomes) -> None:
        """The steps' summaries (fine-tuning's results table), each step's outcome, where
        the models are, the TensorBoard command and the run record."""
        from .kinds import KINDS

        write = self.line
        write("")
        logdirs, models = [], []
        for o in outcomes:
            kind = KINDS[runner.wf.steps[o.name].kind]
            if o.action in ("ran", "reused"):
                text = kind.summary(o.output)
                if text:
                    write(f"== {o.name}: {o.output}\n{text.rstrip()}\n")
                found = kind.artifacts(o.output)
                models += [f"{o.name}: {m}" for m in found.get("models", [])]
                logdirs += [f"{o.name}:{d}" for d in found.get("tensorboard", [])]
        for o in outcomes:
            write(f"{o.action:7} {o.name:14} {o.seconds:8.1f}s  {o.output}",
                  "done" if o.action == "ran" else o.action if o.action in STYLES else None)
        if models:
            write("models (transformers folders):")
            for m in models:
                write(f"  {m}")
        if logdirs:
            write(f"training curves: tensorboard --logdir_spec {','.join(logdirs)}")
        write(f"run record: {runner.record_url or 'not written (see the warning above)'}")


def plain(name: str, p: dict) -> str:
    """A progress line for a pipe or a file: ``[pretrain] step 40/300 (13%) | loss 7.1 | ...``."""
    total, unit = p.get("total"), p.get("unit", "")
    if total:
        done = f"{unit} {number(p['n'])}/{number(total)} ({p['n'] / total:.0%})".strip()
    else:
        done = f"{number(p['n'])} {unit}".strip()
    return f"[{name}] {done}" + (f" | {p['text']}" if p.get("text") else "")


def number(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


class LogStream(io.TextIOBase):
    """A text stream whose lines become log records: what an engine prints lands where
    its logs do (the running step's log), not on the terminal."""

    def __init__(self, logger: logging.Logger, level: int):
        self.logger, self.level = logger, level
        self._buf = threading.local()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        buf = getattr(self._buf, "text", "") + s
        *lines, rest = buf.split("\n")
        self._buf.text = rest
        for line in lines:
            line = ANSI.sub("", line).rstrip()
            if line.strip():
                self.logger.log(self.level, line)
        return len(s)

    def flush(self) -> None:
        rest = ANSI.sub("", getattr(self._buf, "text", "")).rstrip()
        self._buf.text = ""
        if rest.strip():
            self.logger.log(self.level, rest)
