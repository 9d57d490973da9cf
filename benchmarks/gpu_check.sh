#!/usr/bin/env bash
# The GPU check of issue 19, one command, everything it writes under $OUT (8 files, flat):
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (one H200), < 8 min
#   DRY_RUN=1 bash benchmarks/gpu_check.sh       # here: CPU, tiny sizes, end to end
#
#   env.txt              machine, GPU name, driver, Python, torch/CUDA, packages
#   install.txt          what was installed from where, and how long it took
#   model_gpu_128.txt    benchmarks/model_gpu.py, BERT-Base 256 x 128, bf16: ours vs
#                        transformers SDPA, eager and torch.compile (ours unpadded in both)
#   model_gpu_512.txt    the same at 32 x 512
#   pretrain_metrics.jsonl  metrics.jsonl of a real `bertflow run`: examples made here from
#                        data/ (books + the sample dump, a 30,522-piece vocab learned from
#                        them), BERT-Base pretrained 300 steps x 256 at 128 through Ray Train
#                        on the GPU (compiled, bf16)
#   finetune_results.md  a short fine-tune of that model (sentiment, 1 epoch) on the GPU
#   summary.md           the figures: model_gpu's tables, the run's MFU, seq/s and loader
#                        stall (medians over its log lines but the first), the fine-tune
#   gpu_check.log        every command's output
#
# Installing: a virtual environment at $VENV (default /tmp/bertflow-venv) with torch
# $TORCH_PIN from $TORCH_INDEX (CUDA wheels; pinned to the project's torch range) and the
# project with its engines (Beam, Ray, transformers) from the package registries; or from
# a folder of wheels, WHEELS=dir (pip --no-index --find-links). An existing $VENV with
# bertflow's engines in it is used as it is (DRY_RUN here: VENV=.venv). When neither a
# registry nor WHEELS is reachable, the model benchmark still runs on the machine's own
# python3 (its torch and transformers), the rest is skipped, and summary.md says so.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=${DRY_RUN:-0}
OUT=${OUT:-$ROOT/gpu-check-out}
WORK=${WORK:-/tmp/bertflow-gpu-check}
VENV=${VENV:-/tmp/bertflow-venv}
TORCH_PIN=${TORCH_PIN:-2.13.0}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu130}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
: >"$LOG"
STARTED=$(date +%s)

say() { echo "[gpu_check $(date -u +%H:%M:%S) +$(( $(date +%s) - STARTED ))s] $*" | tee -a "$LOG" >&2; }
run() { say "\$ $*"; "$@" >>"$LOG" 2>&1; local rc=$?; [ $rc -eq 0 ] || say "exit $rc: $*"; return $rc; }

if [ "$DRY_RUN" = 1 ]; then
    say "DRY RUN: CPU, tiny sizes"
    MODEL=tiny; STEPS=6; BATCH=8; DUPE=1; VOCAB_SIZE=2000; COMPILE=false
    FT_LIMIT=", max_train_examples: 256, max_eval_examples: 128"
    RAY="{num_cpus: 2}"; RES="{workers: 1, cpus_per_worker: 2}"
    BENCH_128=(--device cpu --size tiny --batch-size 4 --steps 2 --warmup 1 --block 1 --compile --compile-backend aot_eager)
    BENCH_512=(--device cpu --size tiny --batch-size 2 --seq-len 512 --masked 76 --steps 2 --warmup 1 --block 1)
    TORCH_INDEX=${TORCH_INDEX_DRY:-https://download.pytorch.org/whl/cpu}
else
    MODEL=base; STEPS=300; BATCH=256; DUPE=5; VOCAB_SIZE=30522; COMPILE=true
    FT_LIMIT=""
    RAY="{num_cpus: 16, num_gpus: 1}"; RES="{workers: 1, cpus_per_worker: 8, gpus_per_worker: 1}"
    BENCH_128=(--size base --batch-size 256 --seq-len 128 --steps 20 --compile)
    BENCH_512=(--size base --batch-size 32 --seq-len 512 --masked 76 --steps 20 --compile)
fi

# ------------------------------------------------------------------ environment
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "host: $(uname -srm), $(nproc) cores, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) $(git -C "$ROOT" status --short 2>/dev/null | wc -l) files changed"
    echo "dry run: $DRY_RUN"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    echo "python3: $(command -v python3) $(python3 --version 2>&1)"
    python3 -c "import torch; print('python3 torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)" 2>&1 | tail -1
} >"$OUT/env.txt"
cat "$OUT/env.txt" >>"$LOG"

# ------------------------------------------------------------------ install
has_engines() { [ -x "$1/bin/python" ] && "$1/bin/python" -c "import torch, ray.train, apache_beam, transformers, pydantic" 2>/dev/null; }
registry_reachable() { python3 - <<'EOF' 2>/dev/null
import urllib.request
urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10)
EOF
}
INSTALL_T0=$(date +%s)
FULL=1
if has_engines "$VENV"; then
    echo "used the existing environment $VENV (nothing installed)" >"$OUT/install.txt"
else
    if [ -n "${WHEELS:-}" ]; then
        PIP_FROM=(--no-index --find-links "$WHEELS"); TORCH_FROM=("${PIP_FROM[@]}")
    elif registry_reachable; then
        PIP_FROM=(); TORCH_FROM=(--index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple)
    else
        FULL=0
    fi
    if [ "$FULL" = 0 ]; then
        echo "no package registry reachable and no WHEELS: nothing installed; model_gpu.py runs on $(command -v python3)" >"$OUT/install.txt"
    else
        run python3 -m venv "$VENV" && run "$VENV/bin/pip" install -q --upgrade pip \
            && run "$VENV/bin/pip" install -q "${TORCH_FROM[@]}" "torch==$TORCH_PIN" \
            && run "$VENV/bin/pip" install -q "${PIP_FROM[@]}" "$ROOT[test]" \
            || FULL=0
        {
            echo "venv $VENV: torch==$TORCH_PIN (${TORCH_FROM[*]}), then bertflow[test] (${PIP_FROM[*]:-PyPI})"
            echo "install took $(( $(date +%s) - INSTALL_T0 )) s; complete: $FULL"
        } >"$OUT/install.txt"
    fi
fi
cat "$OUT/install.txt" | tee -a "$LOG"
if [ "$FULL" = 1 ]; then
    PY=$VENV/bin/python
    "$PY" -m pip freeze 2>/dev/null | grep -iE '^(torch|transformers|ray|apache-beam|pyarrow|numpy)==' >>"$OUT/env.txt"
else
    PY=python3
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 RAY_DEDUP_LOGS=1
cd "$ROOT"

# ------------------------------------------------------------------ the workflow
# its data steps (Beam, on the CPUs) run beside the model benchmark (on the GPU)
SPEC=$WORK/gpu-check.yaml
if [ "$FULL" = 1 ]; then
    cat >"$SPEC" <<EOF
storage: $WORK/runs
beam: {runner: DirectRunner}
ray: $RAY
parallel_steps: 2
workflows:
  gpu-check:
    steps:
      books: {kind: books, params: {files: "$ROOT/data/books/*.txt", num_shards: 4}}
      wiki: {kind: wikipedia, params: {dump: $ROOT/data/wikipedia/enwiki-sample.xml.bz2, num_shards: 4}}
      vocab: {kind: vocab, inputs: {documents: [wiki, books]}, params: {vocab_size: $VOCAB_SIZE}}
      examples:
        kind: pretraining_data
        inputs: {documents: [wiki, books], vocab: vocab}
        params: {max_seq_length: 128, max_predictions_per_seq: 20, dupe_factor: $DUPE, eval_fraction: 0.02}
      pretrain:
        kind: pretrain
        inputs: {examples: examples, vocab: vocab}
        params: {model: $MODEL, steps: $STEPS, batch_size: $BATCH, optimizer: adamw, lr: 1e-4, warmup: 0.1,
                 log_every: 25, checkpoint_every: $STEPS, eval_examples: 256, compile: $COMPILE}
        resources: $RES
      finetune:
        kind: finetune
        inputs: {model: pretrain}
        params:
          tasks:
            - {name: sentiment, type: classification, train: $ROOT/data/finetune/sentiment/train.csv,
               dev: $ROOT/data/finetune/sentiment/dev.csv, text_column: text, label_column: label,
               max_seq_length: 64, epochs: 1$FT_LIMIT}
          grid: {lr: [5e-5]}
        resources: $RES
EOF
    say "\$ bertflow run gpu-check --only examples (in the background)"
    "$PY" -m bertflow.infra.cli run gpu-check -f "$SPEC" --only examples >>"$WORK/examples.log" 2>&1 &
    EXAMPLES_PID=$!
fi

# ------------------------------------------------------------------ model benchmark
bench() { local out=$1; shift; say "\$ $* > $(basename "$out")"; "$@" >"$out" 2>>"$LOG" || say "exit $?: $*"; }
bench "$OUT/model_gpu_128.txt" "$PY" benchmarks/model_gpu.py "${BENCH_128[@]}"
bench "$OUT/model_gpu_512.txt" "$PY" benchmarks/model_gpu.py "${BENCH_512[@]}"

# ------------------------------------------------------------------ the real run
if [ "$FULL" = 1 ]; then
    wait "$EXAMPLES_PID"; say "examples step: exit $? (log: $WORK/examples.log)"; cat "$WORK/examples.log" >>"$LOG"
    T0=$(date +%s)
    run "$PY" -m bertflow.infra.cli run gpu-check -f "$SPEC" || say "bertflow run failed (see the log)"
    say "bertflow run took $(( $(date +%s) - T0 )) s"
    cp $WORK/runs/pretrain-*/metrics.jsonl "$OUT/pretrain_metrics.jsonl" 2>/dev/null
    cp $WORK/runs/finetune-*/results.md "$OUT/finetune_results.md" 2>/dev/null
fi

# ------------------------------------------------------------------ summary
"$PY" - "$OUT" "$FULL" "$DRY_RUN" <<'EOF' >"$OUT/summary.md" 2>>"$LOG"
import json, statistics, sys
from pathlib import Path
out, full, dry = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
print("# GPU check" + (" (DRY RUN: CPU, tiny sizes)" if dry else ""), "\n")
print("```\n" + (out / "env.txt").read_text().strip() + "\n" + (out / "install.txt").read_text().strip() + "\n```\n")
for name in ("model_gpu_128.txt", "model_gpu_512.txt"):
    text = (out / name).read_text().strip() if (out / name).exists() else ""
    print(f"## {name}\n\n{text or '(no output: see gpu_check.log)'}\n")
print("## bertflow run: pretrain\n")
metrics = out / "pretrain_metrics.jsonl"
if not full:
    print("skipped: the project's engines could not be installed (see install.txt)\n")
elif metrics.exists():
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [m for m in lines if "tokens_per_s" in m]
    steady = train[1:] or train
    print(f"{len(train)} log lines, last step {lines[-1]['step']}; medians over the log lines but the first (compile, warm-up):\n")
    print("| metric | median | first line |\n|---|---:|---:|")
    for key in ("sequences_per_s", "tokens_per_s", "mfu", "stall_ms", "stall_share", "loss"):
        if key in train[0]:
            print(f"| {key} | {statistics.median(m[key] for m in steady):.4g} | {train[0][key]:.4g} |")
    last_eval = [m for m in lines if "eval_mlm_acc" in m]
    if last_eval:
        print(f"\nheld-out MLM accuracy at the end: {last_eval[-1]['eval_mlm_acc']:.4f}")
    print()
else:
    print("no metrics.jsonl: the run failed (see gpu_check.log)\n")
print("## finetune\n")
results = out / "finetune_results.md"
print(results.read_text().strip() if results.exists() else "(no results.md: see gpu_check.log)")
EOF
say "done in $(( $(date +%s) - STARTED )) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
