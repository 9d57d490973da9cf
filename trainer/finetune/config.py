"""The settings of a fine-tuning task and of one trial (a task at one grid setting).

``TaskConfig`` mirrors the ``tasks:`` entries of the ``finetune`` step; every field can
be swept by the step's ``grid`` (``lr``, ``epochs``, ``seed``, ``batch_size``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

TASK_TYPES = ("classification", "ner", "qa")


@dataclass
class TaskConfig:
    name: str
    type: str  # classification | ner | qa
    train: str  # file URL (CSV/TSV/JSONL, CoNLL, SQuAD JSON by type)
    dev: str
    test: str | None = None

    # training
    max_seq_length: int = 128
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # of all optimizer steps, then linear decay to 0
    optimizer: str = "adamw"
    max_grad_norm: float = 1.0
    classifier_dropout: float | None = None  # None: the encoder's hidden dropout
    seed: int = 42
    max_train_examples: int | None = None  # the first N of train (quick runs, tests)
    max_eval_examples: int | None = None  # the first N of dev/test
    eval_every_epoch: bool = True  # dev metrics after every epoch (else after the last only)
    log_every_steps: int = 50  # train loss and lr to metrics.jsonl / TensorBoard every N steps

    # classification
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    id_column: str | None = None  # default: the row number

    # qa
    doc_stride: int = 128  # tokens of overlap between consecutive windows of a context
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best_size: int = 20
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0

    def __post_init__(self):
        if self.type not in TASK_TYPES:
            raise ValueError(f"task {self.name!r}: type must be one of {TASK_TYPES}, got {self.type!r}")
        for name in ("max_seq_length", "epochs", "batch_size", "eval_batch_size", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"task {self.name!r}: {name} must be >= 1")
        if self.type == "qa" and self.max_seq_length - self.max_query_length - 3 <= self.doc_stride:
            raise ValueError(
                f"task {self.name!r}: max_seq_length ({self.max_seq_length}) - max_query_length "
                f"({self.max_query_length}) - 3 special tokens must be > doc_stride ({self.doc_stride}), "
                "so each window moves forward; lower doc_stride or max_query_length"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"task {d.get('name')!r}: unknown settings {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def main_metric(self) -> str:
        """The dev metric that picks the best setting."""
        return {"classification": "accuracy", "ner": "f1", "qa": "f1"}[self.type]


@dataclass
class TrialConfig:
    """One trial: a task with its grid setting applied, where to start from and write."""

    task: TaskConfig
    setting: dict[str, Any]  # the grid values of this trial ({} without a grid)
    setting_id: str  # folder name of the setting, e.g. "lr-5e-05_seed-1"
    init: str  # transformers model folder to start from (any fsspec URL)
    output: str  # this trial's folder: trials/<task>/<setting_id>
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialConfig":
        d = dict(d)
        d["task"] = TaskConfig.from_dict(d["task"])
        return cls(**d)
