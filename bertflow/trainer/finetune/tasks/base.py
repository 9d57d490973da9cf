"""The interface every fine-tuning task type implements.

A task type is one module of this package with two classes:

- ``Config``, a ``TaskConfig``: the type's settings (``type: Literal["<name>"]`` plus its
  own fields; a ``model_validator`` for checks across fields), how it is scored
  (``main_metric``, ``higher_is_better``) and shown (``scale``), and ``implementation``;
- the implementation, a ``Task``: its head, its labels, reading a file into features,
  collating them, the loss and the evaluation. A type whose logits score one answer per
  class along their last axis (a sequence's labels, a question's endings) builds on
  ``ArgmaxTask``: the cross-entropy loss and the argmax predictions are its.

The module imports no torch, ray or transformers at its top (``bertflow validate`` checks
every task's settings without them); the implementation imports torch where it uses it.
A trial calls ``evaluate`` under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Literal

from pydantic import Field, model_validator

from bertflow.contracts.config import Config, data_path, operational

# what names a task and where its data is, and its seeds: every other field can be swept by
# the grid (whose `seed` values are the seeds of the tasks that give none)
IDENTITY = ("name", "type", "train", "dev", "test", "seeds")
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


class TaskConfig(Config):
    """The settings every task type has."""

    type: str
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="folder-safe task name")
    train: str = data_path(description="the train file (any fsspec URL)")
    dev: str | list[str] | dict[str, str] = data_path(
        description="the dev file: scores every setting, picks the best; several ({name: file}, or a list named "
                    "by their files, as MNLI's matched and mismatched) each score the one trained model, the first picks")
    test: str | None = data_path(None, description="a test file, scored once at the end")
    max_seq_length: int = Field(128, ge=8, le=512)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1, description="global: examples per optimizer step over all workers")
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="of all steps, then linear decay to 0")
    optimizer: Literal["adamw", "lamb"] = "adamw"
    max_grad_norm: float = Field(1.0, ge=0)
    classifier_dropout: float | None = Field(None, ge=0, lt=1, description="default: the encoder's dropout")
    seed: int | None = Field(None, description="default: the step's seed")
    seeds: list[int] | None = Field(None, min_length=1, description="train each setting once per seed; the "
                                    "setting is chosen by its median dev score (grid.seed does this for every task)")
    max_train_examples: int | None = Field(None, ge=1, description="the first N of train (quick runs)")
    max_eval_examples: int | None = Field(None, ge=1, description="the first N of dev and test")
    # Evaluating draws no random numbers and leaves the weights alone: the trained model and
    # the final scores are the same either way.
    eval_every_epoch: bool = operational(True, description="dev metrics after every epoch, else after the last")
    log_every_steps: int = operational(50, ge=1, description="train loss and lr logged every N steps")

    main_metric: ClassVar[str]  # the dev metric that picks the best setting
    higher_is_better: ClassVar[bool] = True
    scale: ClassVar[float] = 100.0  # results show metric * scale (1 for metrics already in percent)
    records: ClassVar[str] = "rows"  # what an example of a file is, and what a skip leaves out
    skipped_records: ClassVar[str | None] = None  # what a skip leaves out when not a whole example
    implementation: ClassVar[type["Task"]]

    @model_validator(mode="after")
    def _dev_sets_and_seeds(self):
        self.dev_sets()
        if self.seeds and len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds: each seed once (got {self.seeds})")
        return self

    def dev_sets(self) -> dict[str, str]:
        """The dev files by name, the one that picks the best setting first: one file is
        ``dev``; a list's are named by their file names without the extensions."""
        if isinstance(self.dev, str):
            return {"dev": self.dev}
        named = dict(self.dev) if isinstance(self.dev, dict) else {
            posixpath.basename(url.rstrip("/")).split(".")[0]: url for url in self.dev}
        if not named or len(named) < len(self.dev):
            raise ValueError(f"dev: give one file, or several with different names (got {self.dev})")
        for name in named:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"dev: {name!r} is not a name of letters, digits, '_' and '-'")
        return named

    @classmethod
    def settings(cls) -> set[str]:
        """The fields a grid may sweep."""
        return set(cls.model_fields) - set(IDENTITY)

    unscaled: ClassVar[frozenset[str]] = frozenset({"total"})  # metrics that are counts or losses, not scores

    def percent(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """``metrics`` with each score in percent (times ``scale``): results.json's one scale."""
        return {k: v * self.scale if isinstance(v, float) and k not in self.unscaled else v
                for k, v in metrics.items()}

    def check_file(self, url: str, train: bool) -> str | None:
        """What keeps every trial from using the file ``url`` (the train file when ``train``),
        read from its head as a trial reads it (``Task.check_head``): one line naming the
        file, or None. Rows the head shows a trial would skip are not reported here: the
        trial counts and logs them."""
        with _quiet(logging.getLogger(__name__.rsplit(".", 1)[0])):
            try:
                self.implementation.check_head(self, url, train)
            except ValueError as e:
                return " ".join(str(e).split())
            except OSError as e:  # a folder, no permission: the trial could not read it either
                return f"{url}: cannot be read: {e.strerror or e} ({type(e).__name__})"
        return None

    def best(self, rows: list[dict[str, Any]], score) -> dict[str, Any]:
        """The row with the best ``score(row)`` (None: worst); ties go to the first."""
        worst = float("-inf") if self.higher_is_better else float("inf")

        def key(row):
            value = score(row)
            return worst if value is None else value

        return (max if self.higher_is_better else min)(rows, key=key)


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """``logger``'s warnings held back (a check's skips are the trial's to log)."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class Split:
    examples: list[Any]  # what the file holds (rows, sentences, questions), in its order
    features: list[dict[str, Any]]  # the encoded inputs: one or more per example
    why: dict[str, int] = field(default_factory=dict)  # the skipped records by reason, shown with the scores

    @property
    def skipped(self) -> int:
        """Records left out (each logged with where it was): rows, not distinct values."""
        return sum(self.why.values())

    @classmethod
    def of(cls, examples: list[Any], features: list[dict[str, Any]], **why: int) -> "Split":
        """A split whose skipped records are counted by reason (``labels_train_never_had=20``)."""
        return cls(examples, features, {reason.replace("_", " "): n for reason, n in why.items() if n})


class Task:
    """A task type at work in a trial: built from its config, the tokenizer and the labels."""

    # feature fields that collate stacks (scalars) or pads with IGNORE_INDEX (per-token lists)
    label_fields: ClassVar[tuple[str, ...]] = ("labels",)

    def __init__(self, cfg: TaskConfig, tokenizer, labels: list[str]):
        self.cfg, self.tokenizer, self.labels = cfg, tokenizer, labels
        self.label_id = {label: i for i, label in enumerate(labels)}

    @classmethod
    def head(cls) -> type:
        """The ``nn.Module`` class put on the encoder (from ``bertflow.trainer.finetune.heads``)."""
        raise NotImplementedError

    @classmethod
    def read_labels(cls, cfg: TaskConfig) -> list[str]:
        """The head's label names (from train, sorted, so the same data gives the same ids)."""
        raise NotImplementedError

    @classmethod
    def check_head(cls, cfg: TaskConfig, url: str, train: bool) -> None:
        """Read the head of ``url`` (``files.HEAD_BYTES``) with ``load``'s reader and raise a
        ValueError naming the file when no trial could use it: a column missing, no usable
        record, not the type's format, labels the settings cannot take. Run when the step
        is planned, before any worker starts (``TaskConfig.check_file``)."""
        raise NotImplementedError

    def load(self, url: str, train: bool) -> Split:
        raise NotImplementedError

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        from ..batching import collate

        return collate(features, self.tokenizer.pad_token_id, self.label_fields)

    def batches(self, features: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(offset of the first feature, batch)`` of ``eval_batch_size``, in order."""
        size = self.cfg.eval_batch_size
        for start in range(0, len(features), size):
            yield start, self.collate(features[start:start + size])

    @staticmethod
    def inputs(batch: dict[str, Any], device) -> dict[str, Any]:
        """What the model reads of a batch, on ``device``."""
        return {k: batch[k].to(device) for k in MODEL_INPUTS}

    def loss(self, model, batch: dict[str, Any], device):
        """The mean loss of a batch (a scalar tensor)."""
        raise NotImplementedError

    def loss_weight(self, batch: dict[str, Any]) -> int:
        """What ``loss`` is the mean over, counted (the batch's examples): workers that
        share a batch weigh their losses by it, so that together they train on its mean."""
        return len(batch["input_ids"])

    def evaluate(self, model, split: Split, device) -> tuple[dict[str, float], dict[str, bytes]]:
        """Metrics of one split and its prediction files (suffix -> bytes)."""
        raise NotImplementedError


class ArgmaxTask(Task):
    """A task whose model returns logits that score each class along their last axis (a
    sequence's labels ``[B, labels]``, a question's endings ``[B, N]``), with one class
    index per example in ``labels``: trained by cross-entropy, predicted by argmax."""

    def loss(self, model, batch: dict[str, Any], device):
        import torch.nn.functional as F

        logits = model(**self.inputs(batch, device))
        return F.cross_entropy(logits.float(), batch["labels"].to(device))

    def predict(self, model, split: Split, device) -> list[int]:
        """The best-scoring class of each feature, in order."""
        preds: list[int] = []
        for _, batch in self.batches(split.features):
            preds.extend(model(**self.inputs(batch, device)).argmax(-1).tolist())
        return preds


def predictions_csv(rows: Iterable[tuple[Any, Any, Any]]) -> bytes:
    """``predictions/<split>.csv``: a header ``id,label,pred`` and a row per example."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["id", "label", "pred"])
    w.writerows(rows)
    return out.getvalue().encode()
