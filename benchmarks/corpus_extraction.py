"""Wikipedia extraction, side by side: ours (the ``wikipedia`` Beam job) and WikiExtractor.

    .venv/bin/python benchmarks/corpus_extraction.py            # about 3-5 minutes

Builds a multistream dump of the sample's pages repeated 8 times (distinct page ids;
about 3.3 M words) and one repeated 4 times, installs WikiExtractor (PyPI
``wikiextractor``) into its own venv under ``bench-envs/`` on first use, then runs, each
as its own process tree: WikiExtractor (``--no-templates --processes 1``), ours with 1 and
with 2 Beam workers (FnApiRunner, multi-processing), and the job's functions in one plain
process without Beam (what the cleaning itself costs). Prints one markdown table:

- words of output, wall time, CPU seconds of the whole process tree (every process,
  Beam's runner and workers, WikiExtractor's reader/extractor/reducer);
- words/s per core: words / wall / cores given (1 for WikiExtractor's single extraction
  process, the worker count for ours), and words per CPU second (steadier on a busy
  machine);
- peak memory: the largest sum of RSS over the process tree, sampled every 50 ms;
- markup residue: the share of output sentences (blingfire on WikiExtractor's lines) that
  still carry ``{{ }} [[ ]] | <ref &nbsp; thumb| File:``.

The 4x runs show whether memory grows with the input.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.measure import measure, print_scaling  # noqa: E402
from bertflow.pipelines.multistream import write_multistream  # noqa: E402
from bertflow.pipelines.sentences import split_sentences  # noqa: E402
from bertflow.contracts.layout import list_shards  # noqa: E402
from bertflow.pipelines.shards import read_rows  # noqa: E402

SAMPLE = ROOT / "data" / "wikipedia" / "enwiki-sample.xml.bz2"
WORK = ROOT / "bench-runs" / "corpus_extraction"
WE_VENV = ROOT / "bench-envs" / "wikiextractor"
# Our job's own functions in one plain process (no Beam runner, no shuffle, no Parquet):
# what the cleaner costs apart from the engine.
NO_BEAM = """
import sys
from pathlib import Path
from bertflow.pipelines import wikipedia as w
from bertflow.pipelines.config import WikipediaConfig
dump, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True)
count = lambda name, n=1: None
with open(out / "sentences.txt", "w", encoding="utf-8") as f:
    for split in w.plan_splits(dump):
        for xml, where in w.read_pages(split, WikipediaConfig(dump=dump).max_page_bytes, count):
            page = w.parse_page(xml, count, where)
            doc = page and w.page_document(page, split.dbname, count)
            if doc:
                f.write("\\n".join(doc["sentences"]) + "\\n")
"""
RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\||<ref|&nbsp;|thumb\||File:")


def ensure_wikiextractor() -> Path:
    python = WE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(WE_VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import wikiextractor"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "wikiextractor>=3.0.6,<4"], check=True)
    return python


def ensure_dump(repeat: int) -> Path:
    dump = WORK / f"enwiki-x{repeat}-pages-articles-multistream.xml.bz2"
    if not dump.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        write_multistream(str(SAMPLE), str(dump), pages_per_stream=100, repeat=repeat)
    return dump


def wikiextractor_output(folder: Path) -> list[str]:
    """Sentences of WikiExtractor's text output (its doc tags and title lines left out)."""
    sentences = []
    for path in sorted(folder.rglob("wiki_*")):
        title_next = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("<doc "):
                title_next = True
                continue
            if line.startswith("</doc>") or not line.strip():
                continue
            if title_next:
                title_next = False
                continue
            sentences.extend(split_sentences(line))
    return sentences


def our_output(folder: Path) -> list[str]:
    return [s for row in read_rows(list_shards(str(folder), "documents"), ["sentences"]) for s in row["sentences"]]


def run_one(name: str, repeat: int, workers: int, we_python: Path) -> dict:
    dump = ensure_dump(repeat)
    out = WORK / f"out-{name}-x{repeat}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    if name == "WikiExtractor":
        cmd = [str(we_python), "-m", "wikiextractor.WikiExtractor", str(dump), "--no-templates",
               "--processes", "1", "-o", str(out), "-q"]
    elif name == "bertflow functions, no Beam":
        cmd = [sys.executable, "-c", NO_BEAM, str(dump), str(out)]
    else:
        cmd = [sys.executable, "-m", "bertflow.pipelines.wikipedia", "--dump", str(dump), "--output", str(out),
               "--workers", str(workers), "--num-shards", "4"]
    stats = measure(cmd, log=WORK / f"{out.name}.log")
    if name == "WikiExtractor":
        sentences = wikiextractor_output(out)
    elif name == "bertflow functions, no Beam":
        sentences = (out / "sentences.txt").read_text(encoding="utf-8").splitlines()
    else:
        sentences = our_output(out)
    words = sum(len(s.split()) for s in sentences)
    residue = sum(1 for s in sentences if RESIDUE.search(s))
    shutil.rmtree(out, ignore_errors=True)
    return {"tool": name, "workers": workers, "input": f"sample x{repeat}", "words": words,
            "sentences": len(sentences), "residue": residue / max(1, len(sentences)), "residue_count": residue, **stats}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--skip-memory", action="store_true", help="leave out the 4x runs")
    parser.add_argument("--scaling", type=int, default=32, help="also 1 and 2 workers on the sample repeated this many times (0: not)")
    args = parser.parse_args(argv)
    we_python = ensure_wikiextractor()
    plan = [("WikiExtractor", args.repeat, 1), ("bertflow", args.repeat, 1), ("bertflow", args.repeat, 2),
            ("bertflow functions, no Beam", args.repeat, 1)]
    if not args.skip_memory:
        half = max(1, args.repeat // 2)
        plan += [("WikiExtractor", half, 1), ("bertflow", half, 2)]
    if args.scaling:
        plan += [("bertflow", args.scaling, 1), ("bertflow", args.scaling, 2)]
    rows = []
    for name, repeat, workers in plan:
        print(f"running {name} on sample x{repeat} with {workers} worker(s)...", file=sys.stderr, flush=True)
        rows.append(run_one(name, repeat, workers, we_python))

    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| tool | workers | input | words out | wall s | CPU s | words/s per core | words per CPU s "
          "| peak RSS (tree) | sentences with markup |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tool']} | {r['workers']} | {r['input']} | {r['words'] / 1e6:.2f} M | {r['wall_s']:.1f} | "
              f"{r['cpu_s']:.1f} | {r['words'] / r['wall_s'] / r['workers'] / 1e3:.0f} k | {r['words'] / r['cpu_s'] / 1e3:.0f} k | "
              f"{r['peak_mb']:.0f} MiB | {r['residue_count']} of {r['sentences']:,} ({100 * r['residue']:.3f}%) |")
    if args.scaling:
        print_scaling({(r["input"], r["workers"]): r["wall_s"] for r in rows if r["tool"] == "bertflow"},
                      [f"sample x{args.repeat}", f"sample x{args.scaling}"])


if __name__ == "__main__":
    main()
