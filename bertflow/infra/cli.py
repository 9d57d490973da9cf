"""bertflow: run workflows.yaml, from raw text to a pretrained BERT and fine-tuned results.

    bertflow init my-bert
    bertflow validate
    bertflow run demo --dry-run
    bertflow run demo --set pretrain.steps=600 --force finetune
    bertflow run demo -v                          # Ray's and Beam's own logs on the terminal too
    bertflow status demo
    bertflow status demo --run latest
    bertflow submit bert-base --address http://127.0.0.1:8265

Exit codes: 0 ok, 1 a step failed (or the storage cannot be read), 2 a spec or usage
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from importlib import metadata

import psutil

from bertflow.contracts import storage
from bertflow.contracts.config import data_paths

from . import preflight
from . import runner as runner_mod
from .console import Console, plain
from .kinds import KINDS
from .spec import SpecError, load

FILE_HELP = "the workflows file (default ./workflows.yaml); before or after the command"
STORAGE_HELP = "override the storage root (any fsspec URL: a folder, gs://, s3://)"
# States in which `status` exits 1: the step needs a fix or a rerun.
FAILED_STATES = ("failed", "died")
VERBOSE_HELP = ("also show what the engines log and print (Ray, Ray Train, Beam); without it that goes to "
                "each step's _logs/step.log")


def version() -> str:
    try:
        return metadata.version("bertflow")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertflow", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n\n")[-1].strip())
    p.add_argument("--version", action="version", version=f"bertflow {version()}")
    p.add_argument("-f", "--file", default="workflows.yaml", help=FILE_HELP)
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="run `bertflow COMMAND -h` for its flags")

    def common(sp, workflow=True):
        if workflow == "optional":
            sp.add_argument("workflow", nargs="?", help="a workflow name from the file (default: every workflow)")
        elif workflow:
            sp.add_argument("workflow", help="a workflow name from the file")
        # SUPPRESS: given after the command it wins, else the one before the command stands.
        sp.add_argument("-f", "--file", default=argparse.SUPPRESS, help=FILE_HELP)
        sp.add_argument("--storage", default=argparse.SUPPRESS, help=STORAGE_HELP)
        sp.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                        help="override a step parameter (VALUE is read as YAML; a number indexes a list: "
                             "finetune.tasks.0.epochs=2); repeatable")

    v = sub.add_parser("validate", help="check the workflows file without running anything; "
                                        "warn about placeholders and missing local data")
    common(v, workflow="optional")

    r = sub.add_parser("run", help="run a workflow; steps already done are reused")
    common(r)
    r.add_argument("--only", metavar="STEP", help="run this step and what it needs, nothing else")
    r.add_argument("--force", action="append", default=[], metavar="STEP", help="redo STEP (and what reads it)")
    r.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    r.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    r.add_argument("--lease-wait", type=float, metavar="SECONDS",
                   help="how long to wait for a step that another run is writing, then fail naming that run "
                        "(default: wait until that run is done with it)")

    s = sub.add_parser("status", help="show each step: done / not done / running (its progress) / failed, "
                                      "output, duration, counters; exits 1 when a step failed")
    common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--run", metavar="latest|RECORD",
                   help="the steps of a recorded run, whatever --set flags it had: latest, or a run record's "
                        "name (its UTC stamp, or a prefix) or URL (default: the steps of the spec as given here)")

    j = sub.add_parser("submit", help="run the workflow on a Ray cluster through the Ray Jobs API")
    common(j)
    j.add_argument("--address", required=True,
                   help="the Ray dashboard's address, e.g. http://127.0.0.1:8265 (a kubectl port-forward); "
                        "a cluster with token auth also needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN here")
    j.add_argument("--only", metavar="STEP", help="as for run")
    j.add_argument("--force", action="append", default=[], metavar="STEP", help="as for run")
    j.add_argument("--lease-wait", type=float, metavar="SECONDS", help="as for run")
    j.add_argument("--no-wait", action="store_true", help="return once submitted")
    j.add_argument("--local-storage", action="store_true",
                   help="allow a storage root on this machine's disk (only for a cluster whose every node "
                        "mounts that same path)")

    i = sub.add_parser("init", help="write a starter workflows.yaml (the demo) and the sample data it reads into DIR")
    i.add_argument("dir", nargs="?", default=".", metavar="DIR", help="the folder (default: this one; created if missing)")

    rp = sub.add_parser("report", help="write an HTML page of a run (plan, example statistics, training curves, "
                                       "fine-tuning table) and print where")
    common(rp)
    rp.add_argument("--run", default="latest", metavar="latest|RECORD",
                    help="which run: latest (default), or a run record's name (its UTC stamp, or a prefix) or URL")
    rp.add_argument("--out", metavar="DIR", help="the folder for report.html and its PNGs, any fsspec URL "
                                                 "(default {storage}/_reports/WORKFLOW/RUN-STAMP/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":  # its console: the runner's own lines on stdout, the engines' in the step logs
        logging.getLogger().setLevel(logging.INFO)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_engine_logs()
    if args.command == "init":  # no workflows file yet
        return cmd_init(args)
    try:
        spec = load(args.file, args.set, args.storage, getattr(args, "workflow", None))
        if args.command in ("run", "status"):
            # One connect per store first: a client library finding out by itself retries for a minute.
            problem = preflight.unreachable(remote_urls(spec.workflow(args.workflow)))
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return 1
        return globals()[f"cmd_{args.command}"](spec, args)
    except SpecError as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyError as e:  # an unknown step in --only/--force
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2


def quiet_engine_logs() -> None:
    """Beam's local runner relays every worker's start-up and shutdown chatter: not even
    to the step's log. (Beam's INFO records reach the step's log, and Dataflow's job link
    the terminal too: ``bertflow.infra.console``.)"""
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(
        lambda r: "semi_persistent_directory" not in r.getMessage()
    )
    # gcsfs logs each failed request with its traceback, then raises it: the caller's one
    # line says it (with the credentials to set); the bucket-type probe's fallback is normal.
    gcsfs = logging.getLogger("gcsfs")
    gcsfs.setLevel(logging.WARNING)
    gcsfs.addFilter(lambda r: not any(m in r.getMessage() for m in GCSFS_RAISED))


GCSFS_RAISED = (" out of retries on exception", " non-retriable exception", "Could not determine bucket type")


def remote_urls(wf) -> dict[str, str]:
    """The workflow's storage root and its steps' data paths that are in a store (not on
    this disk), by what they are: ``storage``, ``steps.wiki.params.dump``."""
    urls = {"storage": wf.storage}
    for name in wf.order:
        urls.update({f"steps.{name}.params.{key}": url for key, url in data_paths(wf.params[name]).items()})
    return {what: url for what, url in urls.items() if preflight.endpoint(url) is not None}


def cmd_validate(spec, args) -> int:
    names = [args.workflow] if args.workflow else spec.workflows
    errors = []
    for name in names:
        # an unknown name is a SpecError; a local data file its step refuses, an error too
        errors += spec.workflow(name).data_errors(remote=False)
        steps = spec.spec.workflows[name].steps
        print(f"{name}: {len(steps)} steps ({', '.join(steps)})")
    # Not errors: the demo in the same file runs while the cluster recipe waits for its bucket.
    for line in spec.warnings(args.workflow):
        print(f"warning: {line}", file=sys.stderr)
    if errors:
        raise SpecError(errors)
    print(f"{args.file}: valid")
    return 0


def new_runner(wf) -> runner_mod.Runner:
    """The workflow's runner; reading its inputs' identities may fail in a store."""
    try:
        return runner_mod.Runner(wf)
    except (KeyError, SpecError):
        raise
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        raise StorageFailed(preflight.store_error(wf.storage, e)) from e


class StorageFailed(Exception):
    pass


def cmd_run(spec, args) -> int:
    try:
        r = new_runner(spec.workflow(args.workflow))
    except StorageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if args.dry_run:
            for p in r.plan(args.only, args.force):
                print(f"{p.action:6} {p.name:14} {p.kind:16} {p.output}  ({p.reason})")
            return 0
        console = Console(sys.stdout, verbose=args.verbose)
        r.console = console
        with console.attached():
            try:
                outcomes = r.run(args.only, args.force, lease_wait=args.lease_wait)
            except runner_mod.StepFailed:
                end_ray()
                raise
            end_ray()
    except runner_mod.StepFailed as e:
        print(f"\nerror: {e}", file=sys.stderr)
        if e.outcome.log:
            print("fix it and run the same command again: finished steps are reused", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        # A step's thread may still be inside its engine (a ray.get): the interpreter's exit
        # hooks would tear the engine down under it (Ray's ends the call with SystemExit,
        # then exits 1, or crashes). What the run records is written: end the processes
        # the engines started (a local Ray's, Beam's workers) and leave without the hooks.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        end_descendants()
        os._exit(130)
    except (KeyError, SpecError):
        raise
    except Exception as e:  # noqa: BLE001 - reading the storage root failed: one line, not a traceback
        return storage_error(r, e)
    console.summary(r, outcomes)
    return 0


def end_ray() -> None:
    """Disconnect from Ray (a local one ends) while the console still routes output: what
    Ray has yet to relay of its workers' output lands in the logs, not after the summary."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def end_descendants() -> None:
    """SIGKILL every process this one started, their children included: a local Ray's
    workers run in sessions of their own, out of reach of the terminal's Ctrl-C."""
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass  # ended meanwhile


def storage_error(r, e: Exception) -> int:
    print(f"error: storage {preflight.store_error(r.root, e)}", file=sys.stderr)
    return 1


def since(at: str | None) -> str:
    if not at:
        return ""
    try:
        seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(at)).total_seconds()
    except ValueError:
        return f"since {at}"
    return f"since {at} ({seconds / 60:.1f} min)"


def cmd_status(spec, args) -> int:
    wf = spec.workflow(args.workflow)
    try:
        r = new_runner(wf)
    except StorageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    params = {name: wf.params[name].model_dump(mode="json") for name in wf.order}
    try:
        if args.run:
            from .report import ReportError, find_record

            try:
                url = find_record(r.root, wf.name, args.run)
            except ReportError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            record = storage.read_json(url)
            # The steps that run had: its hashes name their folders, its params their totals.
            steps = {n: s for n, s in record.get("steps", {}).items() if n in r.hashes}
            r.hashes.update({n: s["hash"] for n, s in steps.items()})
            params.update({n: s.get("params", {}) for n, s in steps.items()})
            if not args.json:
                print(f"run {url} (started {record.get('started')}: {' '.join(record.get('argv') or [])})")
        rows = r.status()
        for row in rows:
            if row["state"] == "running":  # what its kind reads from the files it has written so far
                row["progress"] = KINDS[row["kind"]].progress(row["output"], params[row["step"]])
    except Exception as e:  # noqa: BLE001 - reading the storage root failed: one line, not a traceback
        return storage_error(r, e)
    failed = 1 if any(row["state"] in FAILED_STATES for row in rows) else 0
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return failed
    for row in rows:
        took = f"{row['seconds']:.1f}s" if row.get("seconds") is not None else "-"
        print(f"{row['state']:12} {row['step']:14} {took:>9}  {row['output']}  {runner_mod.counters_text(row.get('counters', {}))}")
        if row["state"] == "running":
            p = row.get("progress")
            done = plain(row["step"], p).split("] ", 1)[1] if p else "no progress recorded"
            print(f"{'':12} {done}, {since(row.get('at'))}".rstrip(", "))
        if row.get("held_by"):
            print(f"{'':12} written by {row['held_by']}")
        if row.get("error"):
            print(f"{'':12} error: {row['error']}")
        if row.get("log"):
            print(f"{'':12} log: {row['log']}")
    return failed


def cmd_submit(spec, args) -> int:
    from .submit import check_address, submit

    wf = spec.workflow(args.workflow)  # fail here, not on the cluster, if it cannot run
    if preflight.scheme(wf.storage) == "memory":
        print(f"error: storage {wf.storage} lives in this process: a cluster cannot read it; give the workflow a bucket",
              file=sys.stderr)
        return 2
    if preflight.scheme(wf.storage) == "file" and not args.local_storage:
        print(f"error: storage {storage.resolve_root(wf.storage, wf.base_dir)} is a folder on this machine: "
              "a cluster's pods cannot write or read it; give the workflow a bucket (storage: gs://BUCKET/bertflow, "
              "or --storage gs://...), or pass --local-storage if every node mounts that path", file=sys.stderr)
        return 2
    problem = check_address(args.address)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return submit(args)


def cmd_init(args) -> int:
    from .starter import StarterError, init

    try:
        print(init(args.dir), end="")
    except StarterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_report(spec, args) -> int:
    from .report import ReportError, find_record, write_report

    wf = spec.workflow(args.workflow)
    root = storage.resolve_root(wf.storage, wf.base_dir)
    try:
        page = write_report(find_record(root, wf.name, args.run), args.out)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a store that cannot be read or written: one line, not a traceback
        print(f"error: report of {wf.name} under {root}: {runner_mod.cause(e)}", file=sys.stderr)
        return 1
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
