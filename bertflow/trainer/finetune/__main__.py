"""Fine-tune a BERT on a grid of tasks and settings through Ray, and print the results table.

    python -m bertflow.trainer.finetune --init MODEL_DIR --output OUT --config finetune.json

``finetune.json`` holds the settings of ``bertflow.trainer.finetune.config.FinetuneConfig``:
``{"tasks": [{"name": "sentiment", "type": "classification", "train": "train.csv",
"dev": "dev.csv"}], "grid": {"lr": [5e-5, 1e-4]}}``; the other settings may also be
flags (``--seed``, ...), which win.
"""

from __future__ import annotations

import argparse
import json
import logging

from bertflow.contracts.config import add_arguments, parse

from .config import FinetuneConfig
from .fanout import finetune, results_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="output folder (any fsspec URL but memory://)")
    parser.add_argument("--config", required=True, help="a JSON file with 'tasks', an optional 'grid' and other settings")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--num-cpus", type=float, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    add_arguments(parser, FinetuneConfig, skip=("tasks", "grid"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.config) as f:
        given = json.load(f)
    config = parse(FinetuneConfig, {**given, **vars(args)}, parser)
    if config.init is None:
        parser.error("--init: the model folder to start from is required")
    from bertflow.trainer.launch import connect_ray

    connect_ray(address=args.address, num_cpus=args.num_cpus)
    summary = finetune(config, config.init, args.output, args.workers, args.cpus_per_worker, args.gpus_per_worker)
    print(results_table(summary, {t.name: t for t in config.tasks}))
    if summary.get("trials_failed") and not config.allow_failed_trials:
        raise SystemExit(f"{summary['trials_failed']} trials failed; a rerun retries them (--allow-failed-trials accepts them)")


if __name__ == "__main__":
    main()
