"""bertflow: run workflows.yaml, from raw text to a pretrained BERT and fine-tuned results.

    bertflow validate
    bertflow run demo --dry-run
    bertflow run demo --set pretrain.steps=600 --force finetune
    bertflow status demo
    bertflow submit demo --address http://head:8265

Exit codes: 0 ok, 1 a step failed (or the storage cannot be read), 2 a spec or usage
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from . import runner as runner_mod
from .kinds import KINDS
from .spec import SpecError, load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertflow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, workflow=True):
        if workflow:
            sp.add_argument("workflow", help="a workflow name from the file")
        sp.add_argument("-f", "--file", default="workflows.yaml", help="the workflows file (default ./workflows.yaml)")
        sp.add_argument("--storage", help="override the storage root (any fsspec URL)")
        sp.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                        help="override a step parameter (VALUE is read as YAML); repeatable")

    v = sub.add_parser("validate", help="check the workflows file without running anything")
    common(v, workflow=False)

    r = sub.add_parser("run", help="run a workflow; steps already done are reused")
    common(r)
    r.add_argument("--only", metavar="STEP", help="run this step and what it needs, nothing else")
    r.add_argument("--force", action="append", default=[], metavar="STEP", help="redo STEP (and what reads it)")
    r.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    r.add_argument("--lease-wait", type=float, metavar="SECONDS",
                   help="how long to wait for a step that another run is writing, then fail naming that run "
                        "(default: wait until that run is done with it)")

    s = sub.add_parser("status", help="show each step: done / not done / failed, output, duration, counters")
    common(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")

    j = sub.add_parser("submit", help="run the workflow on a Ray cluster through the Ray Jobs API")
    common(j)
    j.add_argument("--address", required=True, help="the Ray dashboard address, e.g. http://head:8265")
    j.add_argument("--only", metavar="STEP")
    j.add_argument("--force", action="append", default=[], metavar="STEP")
    j.add_argument("--lease-wait", type=float, metavar="SECONDS", help="as for run")
    j.add_argument("--no-wait", action="store_true", help="return once submitted")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_engine_logs()
    try:
        spec = load(args.file, args.set, args.storage, getattr(args, "workflow", None))
        return globals()[f"cmd_{args.command}"](spec, args)
    except SpecError as e:
        for line in e.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyError as e:  # an unknown step in --only/--force
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2


def quiet_engine_logs() -> None:
    """Beam's local runner relays every worker's start-up and shutdown chatter; keep its
    warnings and errors, and the steps' own progress, on the console."""
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(
        lambda r: "semi_persistent_directory" not in r.getMessage()
    )


def cmd_validate(spec, args) -> int:
    for name in spec.workflows:
        steps = spec.spec.workflows[name].steps
        print(f"{name}: {len(steps)} steps ({', '.join(steps)})")
    print(f"{args.file}: valid")
    return 0


def cmd_run(spec, args) -> int:
    r = runner_mod.Runner(spec.workflow(args.workflow))
    try:
        if args.dry_run:
            for p in r.plan(args.only, args.force):
                print(f"{p.action:6} {p.name:14} {p.kind:16} {p.output}  ({p.reason})")
            return 0
        outcomes = r.run(args.only, args.force, lease_wait=args.lease_wait)
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
    print()
    for o in outcomes:
        summary = KINDS[r.wf.steps[o.name].kind].summary(o.output)
        if summary:
            print(f"== {o.name}: {o.output}\n{summary.rstrip()}\n")
    for o in outcomes:
        print(f"{o.action:7} {o.name:14} {o.seconds:8.1f}s  {o.output}")
    print(f"run record: {r.record_url or 'not written (see the warning above)'}")
    return 0


def end_descendants() -> None:
    """SIGKILL every process this one started, their children included: a local Ray's
    workers run in sessions of their own, out of reach of the terminal's Ctrl-C."""
    parent_of = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent_of[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])  # after "(name) state"
            except (OSError, ValueError, IndexError):
                continue
    todo, found = [os.getpid()], []
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parent_of.items() if parent == pid]
        found += children
        todo += children
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def storage_error(r, e: Exception) -> int:
    print(f"error: storage {r.root}: {runner_mod.cause(e)}", file=sys.stderr)
    return 1


def cmd_status(spec, args) -> int:
    r = runner_mod.Runner(spec.workflow(args.workflow))
    try:
        rows = r.status()
    except Exception as e:  # noqa: BLE001 - reading the storage root failed: one line, not a traceback
        return storage_error(r, e)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        took = f"{row['seconds']:.1f}s" if row.get("seconds") is not None else "-"
        counters = ", ".join(f"{k}={v}" for k, v in list(row.get("counters", {}).items())[:4])
        print(f"{row['state']:12} {row['step']:14} {took:>9}  {row['output']}  {counters}")
        if row.get("held_by"):
            print(f"{'':12} written by {row['held_by']}")
        if row.get("error"):
            print(f"{'':12} error: {row['error']}")
        if row.get("log"):
            print(f"{'':12} log: {row['log']}")
    return 0


def cmd_submit(spec, args) -> int:
    from .submit import submit

    spec.workflow(args.workflow)  # fail here, not on the cluster, if it cannot run
    return submit(args)


if __name__ == "__main__":
    sys.exit(main())
