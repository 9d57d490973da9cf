"""`bertflow init [DIR]`: a folder to start from, outside the repo, in one command.

It writes ``DIR/workflows.yaml`` (the demo workflow, the same as the repo's) and
``DIR/data/`` (the sample corpus and fine-tuning sets it reads, copied from the installed
package: ``bertflow.sample_data`` is the repo's ``data/`` folder, shipped in the wheel, and
an editable install's ``data/`` itself).
An existing ``workflows.yaml`` is never overwritten.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

# The demo workflow of the repo's workflows.yaml, with its defaults: tests/test_install.py
# checks that the two agree, so edit both.
WORKFLOWS = """\
# bertflow workflows: `bertflow run demo` runs the demo (about 8 minutes on a 2-core laptop).
# `bertflow run demo --dry-run` shows the plan; outputs go under ./runs, one folder a step.
# Defaults for every workflow; a workflow may override storage, beam and ray.
storage: ./runs                    # any fsspec URL: gs://bucket/bert (bertflow[gcp]), s3://bucket/bert (bertflow[s3])
beam: {runner: DirectRunner}       # local: Beam's multi-process FnApiRunner, one worker per core
ray: {num_cpus: 2}                 # a local Ray with 2 CPUs; or {address: "ray://head:10001"}
parallel_steps: 2                  # independent steps run side by side

workflows:
  demo:
    description: The embedded sample corpus to a tiny BERT and a table of fine-tuned results, on a laptop CPU.
    steps:
      wiki:
        kind: wikipedia
        params: {dump: data/wikipedia/enwiki-sample.xml.bz2, num_shards: 4}
      books:
        kind: books
        params: {files: "data/books/*.txt", num_shards: 4}
      vocab:
        kind: vocab
        inputs: {documents: [wiki, books]}
        params: {vocab_size: 8000, lowercase: true}
      examples:
        kind: pretraining_data
        inputs: {documents: [wiki, books], vocab: vocab}
        params: {max_seq_length: 128, max_predictions_per_seq: 20, dupe_factor: 5, eval_fraction: 0.05}
      pretrain:
        kind: pretrain
        inputs: {examples: examples, vocab: vocab}
        params: {model: tiny, steps: 300, batch_size: 32, optimizer: lamb, lr: 2e-3, warmup: 0.1, eval_every: 100}
        resources: {workers: 2, cpus_per_worker: 1}
      finetune:
        kind: finetune
        inputs: {model: pretrain}
        params:
          tasks:
            - {name: sentiment, type: classification, train: data/finetune/sentiment/train.csv,
               dev: data/finetune/sentiment/dev.csv, text_column: text, label_column: label,
               max_seq_length: 64, epochs: 2}
            - {name: ner, type: ner, train: data/finetune/ner/train.conll, dev: data/finetune/ner/dev.conll,
               max_seq_length: 64, epochs: 10}
            - {name: qa, type: qa, train: data/finetune/qa/squad-sample.json, dev: data/finetune/qa/squad-sample.json,
               max_seq_length: 192, doc_stride: 64, epochs: 10, batch_size: 8, seeds: [1, 2]}   # median of 2 seeds
          grid: {lr: [3e-4, 1e-3]}         # a tiny model wants larger rates than BERT-Base's 2e-5..5e-5
"""

SAMPLE_DATA = "bertflow.sample_data"


class StarterError(Exception):
    """A folder that `init` would have to overwrite: one line, nothing written."""


def sample_files() -> dict:
    """``{relative path: file}`` of the installed sample data (importlib.resources' files)."""
    out = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, f"{prefix}{child.name}/")
            elif not (prefix == "" and child.name == "__init__.py"):  # what makes it a package
                out[prefix + child.name] = child

    walk(resources.files(SAMPLE_DATA), "")
    return dict(sorted(out.items()))


def init(folder: str | Path) -> str:
    """Write the starter into ``folder`` (created if missing) and say what to run next.
    Refuses, before writing anything, an existing ``workflows.yaml`` and a sample file
    that exists with other bytes (a user's own); the same bytes are left as they are."""
    folder = Path(folder)
    target = folder / "workflows.yaml"
    if target.exists():
        raise StarterError(f"{target} exists: init writes a new workflows.yaml only; "
                           "move it away, or give init another folder (bertflow init DIR)")
    files = sample_files()
    if not files:
        raise StarterError(f"the installed package has no sample data ({SAMPLE_DATA}): reinstall bertflow")
    data = folder / "data"
    for rel, src in files.items():
        dst = data / rel
        if dst.exists() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
            raise StarterError(f"{dst} exists and is not the sample's: move data/ away, or give init another folder")
    for rel, src in files.items():
        dst = data / rel
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as f, open(dst, "wb") as out:
            shutil.copyfileobj(f, out)
    # Last: a copy that failed leaves no workflows.yaml, so the same command runs again.
    target.write_text(WORKFLOWS, encoding="utf-8")
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    cd = "" if folder.resolve() == Path.cwd().resolve() else f"  cd {folder}\n"
    return (f"wrote {target} (the demo workflow) and {data}/ ({len(files)} sample files, {size / 1e6:.1f} MB; "
            f"where each came from: {data / 'README.md'})\nnext:\n{cd}"
            "  bertflow validate demo\n"
            "  bertflow run demo --dry-run     # the plan: every step, its output folder\n"
            "  bertflow run demo               # about 8 minutes on 2 cores; a second run reuses every step\n")
