"""The step runner: content-addressed outputs, manifests written last, skip-when-done.

A step's output folder is ``{storage}/{step}-{hash}``; the hash covers the step kind, its
code version, its resolved parameters and the hashes of the steps it reads, so the same
spec run twice does the work once and a changed parameter reruns exactly that step and
what reads it. A step is done when ``_SUCCESS.json`` exists in its folder: written last,
after every data file, with the files, counters, timings, parameters and versions. A step
that raised or was interrupted leaves ``_status.json`` (state, error, log) and no manifest,
and is redone on the next run; its folder is kept so that a kind can resume from what it
left (the trainer's checkpoints). A done step whose files no longer have the sizes its
manifest lists (a bad copy, a full disk) is not done: ``status`` says which file differs,
and ``run`` redoes it. Before a step writes, its old manifest and an earlier attempt's
``_spill/`` are removed. One run at a time writes a step: it holds the step's lease
(``bertflow.infra.lease``), and another run waits for it, then reuses what it made.

    runner = Runner(spec_file.workflow("demo"))
    runner.run()            # or run(only="vocab"), run(force=["examples"]), run(dry_run=True)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from bertflow.contracts import storage
from bertflow.contracts.config import data_paths, hashed

from .inputs import by_name as input_by_name
from .inputs import changes as input_changes
from .inputs import identity as input_identity
from .kinds import KINDS, Resources, StepContext
from .lease import LEASE, Lease, LeaseHeld, describe
from .spec import SpecError, Workflow

SUCCESS = "_SUCCESS.json"
STATUS = "_status.json"
LOG = "_logs/step.log"
RUNNER_FILES = (SUCCESS, STATUS, LOG, LEASE)
# pipelines.shards' spill folder: an earlier attempt's runs are never resumed, only removed
SCRATCH = "_spill"
MISMATCH = "its output no longer matches its manifest"
INTERRUPTED = "interrupted (Ctrl-C)"

log = logging.getLogger("bertflow")

PACKAGES = ("bertflow", "apache-beam", "ray", "torch", "tokenizers", "transformers", "pyarrow", "fsspec", "s3fs", "gcsfs")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def step_hash(kind: str, version: int, params: dict, input_hashes: dict[str, list[str]],
              data: dict[str, str] | None = None) -> str:
    """``data``: the digest of what each ``data_path`` parameter names (``bertflow.infra.inputs``)."""
    blob = json.dumps(
        {"kind": kind, "version": version, "params": params, "inputs": input_hashes, **({"data": data} if data else {})},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class PlannedStep:
    name: str
    kind: str
    hash: str
    output: str
    action: str  # "run" or "reuse"
    reason: str  # why it runs: "new", "forced", "after FORCED", "failed before", ...


@dataclass
class StepOutcome:
    name: str
    action: str  # ran, reused, failed, interrupted, not run
    output: str
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None
    counters: dict = field(default_factory=dict)


class StepFailed(Exception):
    def __init__(self, outcome: StepOutcome):
        self.outcome = outcome
        log = f"\n  log: {outcome.log}" if outcome.log else ""
        super().__init__(f"step '{outcome.name}' failed: {outcome.error}{log}")


class Interrupted(Exception):
    pass


class LeaseLost(Exception):
    """Another run took the step's lease while this one wrote it (this one stalled past
    the lease's expiry): this run's output is not trusted."""


class Bookkeeping(Exception):
    """The runner's own writes for a step failed (a read-only or full disk, a root that is
    a file, a store gone): one line, the URL and the cause."""

    def __init__(self, url: str, error: BaseException):
        super().__init__(f"cannot write {url}: {cause(error)}")


def cause(e: BaseException) -> str:
    """An error in one line: an OSError's reason without the path repeated, else the text."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror} ({type(e).__name__})"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def bookkeeping(url: str):
    try:
        yield
    except (LeaseHeld, Bookkeeping):
        raise
    except Exception as e:  # noqa: BLE001 - any store's error (OSError, botocore's, ...)
        raise Bookkeeping(url, e) from e


def manifest_mismatch(listed: dict[str, int], found: dict[str, int]) -> str:
    """What differs between a manifest's ``{file: size}`` and a listing of the folder
    ("" when nothing): missing files and other sizes, the first named, the rest counted."""
    bad = [f"{name} is missing" if name not in found else f"{name} is {found[name]} bytes, the manifest says {size}"
           for name, size in sorted(listed.items()) if found.get(name) != size]
    if not bad:
        return ""
    return bad[0] + (f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else "")


class Runner:
    def __init__(self, workflow: Workflow, console=None):
        """``console``: a ``bertflow.infra.console.Console`` that shows each running step's
        progress (the runner's own lines reach it through logging: ``extra={"console": ...}``)."""
        self.wf = workflow
        self.console = console
        self.root = storage.resolve_root(workflow.storage, workflow.base_dir)
        self.hashes: dict[str, str] = {}
        # What each step's data paths hold (a dump, books, a task's files): their content
        # is part of the hash, so a changed file reruns what reads it.
        self.data: dict[str, dict[str, dict]] = {}
        for name in workflow.order:
            step = workflow.steps[name]
            kind = KINDS[step.kind]
            # Operational parameters (logging, checkpoint cadence, retries) leave the hash
            # alone: changing one reuses a done step and resumes a failed one in its folder.
            params = hashed(workflow.params[name])
            inputs = {k: [self.hashes[s] for s in v] for k, v in sorted(workflow.inputs(name).items())}
            self.data[name] = {key: input_identity(storage.absolute(path, workflow.base_dir))
                               for key, path in data_paths(workflow.params[name]).items()}
            data = {key: ident["digest"] for key, ident in self.data[name].items()}
            self.hashes[name] = step_hash(step.kind, kind.version, params, inputs, data)

    def output(self, name: str) -> str:
        return storage.join(self.root, f"{name}-{self.hashes[name]}")

    def is_done(self, name: str) -> bool:
        return self.manifest_check(name) == ""

    def manifest_check(self, name: str) -> str | None:
        """None when the step has no manifest; "" when its files are there with the sizes
        the manifest lists (one listing); else what differs (a bad copy, a full disk, a
        hand edit): ``part-0.parquet is 4096 bytes, the manifest says 81920``."""
        url = storage.join(self.output(name), SUCCESS)
        if not storage.exists(url):
            return None
        return manifest_mismatch(storage.read_json(url).get("files", {}), storage.list_files(self.output(name)))

    # -- planning ----------------------------------------------------------------------

    def plan(self, only: str | None = None, force: list[str] = ()) -> list[PlannedStep]:
        for s in [only, *force]:
            if s is not None and s not in self.wf.steps:
                raise KeyError(f"no step '{s}' in workflow '{self.wf.name}' (steps: {', '.join(self.wf.order)})")
        selected = self.wf.upstream(only) if only else set(self.wf.order)
        # A forced step's readers are redone too: their input's content changed.
        forced = {d: f for f in force for d in self.wf.downstream(f)}
        planned = []
        for name in self.wf.order:
            if name not in selected:
                continue
            check = self.manifest_check(name)
            if name in forced:
                action, reason = "run", "forced" if forced[name] == name else f"after forced {forced[name]}"
            elif check == "":
                action, reason = "reuse", "done"
            elif check:
                action, reason = "run", f"{MISMATCH}: {check}"
            else:
                attempt = self.last_attempt(name) or {}
                state = attempt.get("state")
                action, reason = "run", {"failed": "failed before", "interrupted": "interrupted before"}.get(state, "new")
                if state == "died":
                    reason = f"the last run died while running it: {attempt['died']}"
                elif reason == "new":
                    reason = self._why_new(name, planned)
            planned.append(PlannedStep(name, self.wf.steps[name].kind, self.hashes[name], self.output(name), action, reason))
        return planned

    def _why_new(self, name: str, planned: list[PlannedStep]) -> str:
        """Why a step that is not done runs: ``input changed: files: austen-emma.txt changed
        (size ...)`` when the last run of this workflow read other data under the same
        paths, ``reads books, whose input changed``, or ``new``."""
        # by name where the data paths are in named items (a task's files): removing one
        # task must not read as every later task's file changed
        step = self._last_record().get("steps", {}).get(name, {})
        last = input_by_name(step.get("data", {}), step.get("params", {}))
        now = input_by_name(self.data[name], self.wf.params[name].model_dump(mode="json"))
        changed = [f"{key}: {'; '.join(input_changes(last[key], ident)) or 'changed'}"
                   for key, ident in now.items() if key in last and last[key].get("digest") != ident["digest"]]
        if changed:
            return "input changed: " + " | ".join(changed)
        upstream = [p.name for p in planned if p.reason.startswith("input changed") and p.name in self.wf.upstream(name)]
        return f"reads {upstream[0]}, whose input changed" if upstream else "new"

    @functools.cache
    def _last_record(self) -> dict:
        records = storage.glob(storage.join(self.root, "_runs", self.wf.name, "*.json"))
        return storage.read_json(records[-1]) if records else {}

    def last_attempt(self, name: str) -> dict | None:
        """The step's ``_status.json`` (None without one), judged against its lease: a live
        holder is ``held_by``; a ``running`` that no live run holds is ``died``, with why in
        ``died`` (its process is gone, its heartbeat stopped). Plan and status both read it."""
        out = self.output(name)
        url = storage.join(out, STATUS)
        if not storage.exists(url):
            return None
        attempt = storage.read_json(url)
        lease = Lease(storage.join(out, LEASE), run_id="")
        holder = lease.holder()
        gone = lease.expired(holder) if holder is not None else "no run holds its lease"
        if not gone:
            attempt["held_by"] = describe(holder)
        elif attempt.get("state") == "running":
            attempt.update(state="died", died=gone)  # nobody keeps its lease alive
        return attempt

    # -- running -----------------------------------------------------------------------

    def run(self, only: str | None = None, force: list[str] = (), dry_run: bool = False,
            lease_wait: float | None = None) -> list[StepOutcome]:
        """Run the plan. A step that another run is writing (it holds the step's lease) is
        waited for, ``lease_wait`` seconds at most (None: as long as that run takes), and
        reused if that run finished it."""
        planned = self.plan(only, force)
        # What the steps to run will read, checked before any of them starts an engine.
        errors = self.wf.data_errors([p.name for p in planned if p.action == "run"])
        if errors:
            raise SpecError(errors)
        if dry_run:
            return [StepOutcome(p.name, "would run" if p.action == "run" else "would reuse", p.output) for p in planned]
        self.run_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease_wait = lease_wait
        self._leases: dict[str, Lease] = {}  # the steps whose lease this run holds
        self._log_urls: dict[str, str] = {}
        started, t0 = now(), time.time()
        outcomes = {p.name: StepOutcome(p.name, "reused", p.output) for p in planned if p.action == "reuse"}
        todo = [p for p in planned if p.action == "run"]
        for p in planned:
            log.info("%-10s %-6s %s (%s)", p.name, p.action, p.output, p.reason,
                     extra={"console": "reused" if p.action == "reuse" else None})
        try:
            self._schedule(todo, outcomes)
        finally:
            for p in planned:
                outcomes.setdefault(p.name, StepOutcome(p.name, "not run", p.output))
            ordered = [outcomes[p.name] for p in planned]
            self.record_url = None
            try:
                self._write_record(started, time.time() - t0, planned, ordered)
            except Exception as e:  # noqa: BLE001 - a full disk or a store gone: the steps' errors come first
                log.warning("could not write the run record under %s: %s", storage.join(self.root, "_runs"), cause(e))
        failed = [o for o in ordered if o.action == "failed"]
        if failed:
            raise StepFailed(failed[0])
        return ordered

    def _schedule(self, todo: list[PlannedStep], outcomes: dict[str, StepOutcome]) -> None:
        events: queue.Queue[StepOutcome] = queue.Queue()
        cancel = threading.Event()
        pending = {p.name: p for p in todo}
        running: dict[str, PlannedStep] = {}
        failed = False
        try:
            while pending or running:
                if not failed:
                    for name in list(pending):
                        if len(running) >= self.wf.parallel_steps:
                            break
                        needs = [d for ds in self.wf.inputs(name).values() for d in ds]
                        if all(d in outcomes and outcomes[d].action in ("ran", "reused") for d in needs):
                            running[name] = pending.pop(name)
                            t = threading.Thread(
                                target=self._execute, args=(running[name], events, cancel), name=f"step-{name}", daemon=True
                            )
                            t.start()
                if not running:
                    break  # what is left waits on a failed step
                while True:
                    try:
                        outcome = events.get(timeout=0.5)
                        break
                    except queue.Empty:
                        continue
                running.pop(outcome.name)
                outcomes[outcome.name] = outcome
                if outcome.action == "failed":
                    failed = True  # let running steps finish; start nothing new
        except KeyboardInterrupt:
            # Every step still running is interrupted, whatever its thread raises from now
            # on (its engine's local processes got the signal too: they share the terminal's
            # process group). Its status says so and its lease is let go here, as its thread
            # may still be inside the engine (a ray.get) when the process exits.
            cancel.set()
            for name, p in running.items():
                outcomes[name] = StepOutcome(name, "interrupted", p.output, error=INTERRUPTED)
                lease = self._leases.pop(name, None)
                if lease is None:
                    continue  # still waiting for another run's lease: that run's status stays
                try:
                    self._write_status(p, "interrupted", error=INTERRUPTED, log=self._log_urls.get(name))
                    lease.release()
                except Exception as e:  # noqa: BLE001 - the interruption is reported either way
                    log.warning("could not record that %s was interrupted: %s", name, cause(e))
            raise

    def _execute(self, p: PlannedStep, events: queue.Queue, cancel: threading.Event) -> None:
        step = self.wf.steps[p.name]
        kind = KINDS[step.kind]
        logger = logging.getLogger(f"bertflow.{p.name}")
        t0 = time.time()
        outcome = StepOutcome(p.name, "ran", p.output)
        local_log = handler = lease = None
        try:
            with bookkeeping(p.output):
                storage.makedirs(p.output)
            lease = Lease(storage.join(p.output, LEASE), self.run_id)

            def waiting(holder: dict) -> None:
                logger.info("step %s: waiting for %s, which is writing %s", p.name, describe(holder), p.output,
                            extra={"console": None})

            with bookkeeping(lease.url):
                waited = lease.acquire(self.lease_wait, waiting, cancel)
            self._leases[p.name] = lease  # only the lease's holder writes the step's status
            if waited and self.is_done(p.name):
                logger.info("step %s: done by the run it waited for; reused", p.name, extra={"console": "reused"})
                outcome.action = "reused"
                return
            with bookkeeping(storage.join(p.output, LOG)):
                local_log, handler = self._open_log(p)
            outcome.log = self._log_url(p, local_log)
            self._log_urls[p.name] = outcome.log
            self._start_attempt(p, outcome.log)
            logger.info("step %s (%s) -> %s", p.name, step.kind, p.output, extra={"console": "start"})
            if self.console is not None:
                params = self.wf.params[p.name].model_dump(mode="json")
                self.console.watch(p.name, functools.partial(kind.progress, p.output, params))
            ctx = StepContext(
                step=p.name,
                output=p.output,
                inputs={k: [self.output(s) for s in v] for k, v in self.wf.inputs(p.name).items()},
                params=self.wf.params[p.name],
                resources=Resources(**step.resources.model_dump()),
                base_dir=self.wf.base_dir,
                beam={"runner": self.wf.beam.runner, "options": dict(self.wf.beam.options),
                      "job_name": f"bertflow-{p.name}-{p.hash}".lower().replace("_", "-")},
                ray=self.wf.ray.model_dump(),
                log=logger,
            )
            counters = kind().run(ctx) or {}
            if cancel.is_set():
                raise Interrupted()
            if lease.lost:
                raise LeaseLost(f"{lease.url}: taken over by {describe(lease.lost)} while this run wrote the step")
            outcome.seconds = time.time() - t0
            outcome.counters = counters
            with bookkeeping(p.output):
                files = {k: v for k, v in storage.list_files(p.output).items() if k not in RUNNER_FILES}
            manifest = {
                "step": p.name,
                "workflow": self.wf.name,
                "kind": step.kind,
                "kind_version": kind.version,
                "hash": p.hash,
                "params": self.wf.params[p.name].model_dump(mode="json"),
                "inputs": ctx.inputs,
                "data": self.data[p.name],
                "resources": step.resources.model_dump(),
                "files": files,
                "counters": counters,
                "started": datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec="seconds"),
                "finished": now(),
                "seconds": round(outcome.seconds, 3),
                "versions": package_versions(),
                "host": socket.gethostname(),
                "run_id": self.run_id,
            }
            if self.console is not None:
                self.console.unwatch(p.name)
            logger.info("step %s done in %.1fs: %s", p.name, outcome.seconds, counters_text(counters),
                        extra={"console": "done"})
            with bookkeeping(storage.join(p.output, LOG)):
                self._close_log(p, local_log, handler)
            handler = None
            # From here on the step is done; the status follows the manifest, never leads it.
            with bookkeeping(storage.join(p.output, SUCCESS)):
                storage.write_json(storage.join(p.output, SUCCESS), manifest)
            try:
                self._write_status(p, "done", log=outcome.log)
            except Exception as e:  # noqa: BLE001 - the manifest says done; a stale status must not undo it
                logger.warning("step %s: done, but its %s could not be updated: %s", p.name, STATUS, cause(e))
        except BaseException as e:  # noqa: BLE001 - a failed step must be recorded, whatever it raised
            if self.console is not None:
                self.console.unwatch(p.name)
            interrupted = cancel.is_set() or isinstance(e, (Interrupted, KeyboardInterrupt))
            outcome.action = "interrupted" if interrupted else "failed"
            outcome.seconds = time.time() - t0
            if interrupted or isinstance(e, (Bookkeeping, LeaseHeld, LeaseLost)):
                # The run says so once, on the console, in one line (the URL and the cause);
                # the step's own log, when it has one, keeps the detail.
                outcome.error = INTERRUPTED if interrupted else str(e)
                if handler is not None:
                    handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "step %s: %s\n%s",
                                                     (p.name, outcome.error, traceback.format_exc()), None))
            else:
                outcome.error = f"{type(e).__name__}: {e}"
                # The terminal gets the line, the step's log the traceback too.
                logger.error("step %s failed: %s", p.name, outcome.error, extra={"console": "failed"})
                logger.info("step %s: the traceback\n%s", p.name, traceback.format_exc())
            if handler is not None:
                try:
                    self._close_log(p, local_log, handler)
                except Exception as e2:  # noqa: BLE001 - keep the step's own error, not the bookkeeping's
                    logger.warning("step %s: could not save its log %s: %s; it is in %s", p.name, outcome.log,
                                   cause(e2), local_log)
                    outcome.log = local_log  # the error points to the copy that exists
            holding = lease is not None and self._leases.get(p.name) is lease
            if holding and not (isinstance(e, Bookkeeping) and outcome.log is None):
                try:
                    self._write_status(p, outcome.action, error=outcome.error, log=outcome.log)
                except Exception as e2:  # noqa: BLE001 - keep the step's own error, not the bookkeeping's
                    logger.warning("step %s: could not record that it %s in %s: %s", p.name, outcome.action,
                                   storage.join(p.output, STATUS), cause(e2))
        finally:
            if self._leases.pop(p.name, None) is not None:
                try:
                    lease.release()
                except Exception as e:  # noqa: BLE001 - an unreleased lease expires
                    logger.warning("step %s: could not release %s: %s", p.name, lease.url, cause(e))
            events.put(outcome)

    def _start_attempt(self, p: PlannedStep, log_url: str) -> None:
        """Before a step writes: the manifest of the output it replaces goes first, so a
        half-rewritten folder is never read as done (a --force, a damaged output), then an
        earlier attempt's scratch (its spill can fill the disk the retry needs)."""
        for name in (SUCCESS, SCRATCH):
            url = storage.join(p.output, name)
            with bookkeeping(url):
                storage.remove_tree(url)  # a file or a folder
        with bookkeeping(storage.join(p.output, STATUS)):
            self._write_status(p, "running", log=log_url, run_id=self.run_id)

    # -- logs, status, records ---------------------------------------------------------

    def _log_url(self, p: PlannedStep, local_log: str) -> str:
        return local_log if storage.is_local(p.output) else storage.join(p.output, LOG)

    def _open_log(self, p: PlannedStep):
        if storage.is_local(p.output):
            path = os.path.join(p.output, LOG)
            os.makedirs(os.path.dirname(path), exist_ok=True)
        else:
            # written here, uploaded when the step ends (an object store cannot append), then
            # removed; kept, and named in the step's error, when the upload fails
            fd, path = tempfile.mkstemp(prefix=f"bertflow-{p.name}-{p.hash}-", suffix=".log")
            os.close(fd)
        handler = logging.FileHandler(path, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # This thread's records, and those of threads that are no step's (a local Ray's
        # relay of its workers' output, Beam's worker handlers): other steps may run beside it.
        ident = threading.get_ident()
        handler.addFilter(lambda record: record.thread == ident or not (record.threadName or "").startswith("step-"))
        logging.getLogger().addHandler(handler)
        return path, handler

    def _close_log(self, p: PlannedStep, local_log: str, handler: logging.Handler) -> None:
        logging.getLogger().removeHandler(handler)
        handler.close()
        if not storage.is_local(p.output):
            storage.put_file(local_log, storage.join(p.output, LOG))
            os.remove(local_log)

    def _write_status(self, p: PlannedStep, state: str, **extra) -> None:
        storage.write_json(
            storage.join(p.output, STATUS),
            {"state": state, "at": now(), "host": socket.gethostname(), "pid": os.getpid(), **extra},
        )

    def _write_record(self, started: str, seconds: float, planned: list[PlannedStep], outcomes: list[StepOutcome]) -> None:
        record = {
            "workflow": self.wf.name,
            "started": started,
            "seconds": round(seconds, 3),
            "argv": sys.argv,
            "storage": self.root,
            "git": git_commit(self.wf.base_dir),
            "spec": self.resolved_spec(),
            "versions": package_versions(),
            "steps": {
                o.name: {**asdict(o), "kind": p.kind, "hash": p.hash, "reason": p.reason,
                         "params": self.wf.params[p.name].model_dump(mode="json"), "data": self.data[p.name]}
                for p, o in zip(planned, outcomes)
            },
        }
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        url = storage.join(self.root, "_runs", self.wf.name, f"{stamp}-{uuid.uuid4().hex[:6]}.json")
        storage.write_json(url, record)
        self.record_url = url

    def resolved_spec(self) -> dict:
        """The workflow as it ran: defaults filled in, parameters resolved, outputs named."""
        return {
            "storage": self.root,
            "beam": self.wf.beam.model_dump(),
            "ray": self.wf.ray.model_dump(),
            "steps": {
                name: {
                    "kind": self.wf.steps[name].kind,
                    "inputs": self.wf.steps[name].inputs,
                    "params": self.wf.params[name].model_dump(mode="json"),
                    "resources": self.wf.steps[name].resources.model_dump(),
                    "output": self.output(name),
                }
                for name in self.wf.order
            },
        }

    # -- status ------------------------------------------------------------------------

    def status(self) -> list[dict]:
        rows = []
        for name in self.wf.order:
            out = self.output(name)
            row = {"step": name, "kind": self.wf.steps[name].kind, "output": out, "state": "not done"}
            check = self.manifest_check(name)
            if check is not None:
                m = storage.read_json(storage.join(out, SUCCESS))
                row.update(state="done", seconds=m.get("seconds"), counters=m.get("counters", {}), finished=m.get("finished"))
                if check:
                    row.update(state="damaged", error=f"{MISMATCH}: {check}; the next run redoes it")
            elif (attempt := self.last_attempt(name)) is not None:
                if "held_by" in attempt:
                    row["held_by"] = attempt["held_by"]
                died = attempt.get("died") and f"the run died while running it: {attempt['died']}"
                row.update(state=attempt.get("state", "unknown"), error=attempt.get("error") or died,
                           log=attempt.get("log"), at=attempt.get("at"))
            rows.append(row)
        return rows


def number(value) -> str:
    """A counter as a person reads it: 111 (not 111.0), 0.1235, 1.235e+06."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def counters_text(counters: dict, n: int = 4) -> str:
    return ", ".join(f"{k}={number(v)}" for k, v in list(counters.items())[:n])


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(path) -> dict | None:
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None
