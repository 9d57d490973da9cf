"""Measure a command's whole process tree: wall seconds, CPU seconds, peak memory.

    from benchmarks.measure import measure
    measure([sys.executable, "-m", "bertflow.pipelines.wikipedia", "--help"])

A Beam job on the local runner is a tree (the runner, its job service, one worker process
per worker), and so is WikiExtractor (reader, extractor, reducer): time and memory are
counted over every process of the tree, read from /proc (Linux) every 50 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_TICK, _PAGE = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (parent pid, CPU seconds, RSS bytes) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as f:
                rss = int(f.read().split()[1]) * _PAGE
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # fields[0] is the state; ppid, utime, stime are fields 4, 14, 15 of stat.
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK, rss)
    return table


def _tree(table: dict, root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def measure(cmd: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run ``cmd`` (from the repository root; output to ``log`` or nowhere) and return
    ``wall_s``, ``cpu_s`` (user + system of it and all its descendants), ``peak_mb`` (the
    largest RSS summed over the tree), ``largest_mb`` (of one process) and ``child_mb`` (of
    one descendant: a Beam worker, say). Raises when ``cmd`` fails."""
    out = open(log, "w") if log else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    peak = [0, 0, 0]  # tree sum, largest single process, largest descendant
    cpu_seen: dict[int, float] = {}

    def sample():
        while proc.poll() is None:
            table = _proc_table()
            tree = _tree(table, proc.pid)
            peak[0] = max(peak[0], sum(table[p][2] for p in tree))
            peak[1] = max([peak[1], *(table[p][2] for p in tree)])
            peak[2] = max([peak[2], *(table[p][2] for p in tree if p != proc.pid)])
            for p in tree:
                cpu_seen[p] = table[p][1]  # catches descendants that nobody reaps
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    sampler.join()
    if log:
        out.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}" + (f"; see {log}" if log else ""))
    # wait4 counts the process and the children it reaped; the samples count the others.
    cpu = max(usage.ru_utime + usage.ru_stime, sum(cpu_seen.values()))
    return {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak[0] / 2**20, "largest_mb": peak[1] / 2**20, "child_mb": peak[2] / 2**20}


_SPIN = "import sys\ns = 0\nfor i in range(int(sys.argv[1])):\n    s += i * i % 7\n"


def two_process_ceiling(loops: int = 40_000_000, repeat: int = 3) -> float:
    """What 2 processes can gain here over 1 at best: the wall time of a pure-Python loop in
    one process over that of the same loop halved in two processes at once, the best of
    ``repeat`` tries. Below 2 where the cores are shared with the host's other guests or
    are hyperthreads."""

    def wall(counts: list[int]) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN, str(n)]) for n in counts]
        for p in procs:
            p.wait()
        return time.perf_counter() - start

    return max(wall([loops]) / wall([loops // 2, loops // 2]) for _ in range(repeat))


def print_scaling(wall: dict[tuple[str, int], float], inputs: list[str]) -> None:
    """A markdown table of 2 workers against 1 (``wall[(input, workers)]``, seconds) on two
    inputs, small then large: the speed-up of each, the marginal one (the extra input's
    wall time: start-up paid once, as a large corpus sees it), and the machine's ceiling."""
    small, large = inputs
    print("\n| 2 workers over 1 (wall) | speed-up |\n|---|---:|")
    for name in inputs:
        print(f"| {name} | {wall[(name, 1)] / wall[(name, 2)]:.2f}x |")
    extra = (wall[(large, 1)] - wall[(small, 1)]) / (wall[(large, 2)] - wall[(small, 2)])
    print(f"| marginal, {small} to {large} | {extra:.2f}x |")
    print(f"| this machine's ceiling (a pure-Python loop in 2 processes) | {two_process_ceiling():.2f}x |")
