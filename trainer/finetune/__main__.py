"""Fine-tune a BERT on a grid of tasks and settings through Ray, and print the results table.

    python -m trainer.finetune --init MODEL_DIR --output OUT --config finetune.json

``finetune.json``: ``{"tasks": [{"name": "sentiment", "type": "classification",
"train": "data/finetune/sentiment/train.csv", "dev": "data/finetune/sentiment/dev.csv"}],
"grid": {"lr": [5e-5, 1e-4]}}``; see ``trainer.finetune.config.TaskConfig`` for every setting.
"""

from __future__ import annotations

import argparse
import json
import logging

from .config import TaskConfig
from .fanout import finetune, results_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="transformers model folder to start from (any fsspec URL)")
    parser.add_argument("--output", required=True, help="output folder (any fsspec URL but memory://)")
    parser.add_argument("--config", required=True, help="JSON file with 'tasks' and optional 'grid'")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--max-concurrent-trials", type=int, default=None)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.config) as f:
        spec = json.load(f)
    import ray

    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False)
    summary = finetune([TaskConfig.from_dict(t) for t in spec["tasks"]], spec.get("grid", {}), args.init,
                       args.output, args.workers, args.cpus_per_worker, args.gpus_per_worker,
                       args.max_concurrent_trials)
    print(results_table(summary))


if __name__ == "__main__":
    main()
