"""Fine-tuning heads on our ``BertModel``, named as transformers names them.

The classes, their attribute names (``bert``, ``dropout``, ``classifier``, ``qa_outputs``)
and the config keys (``num_labels``, ``id2label``, ``label2id``) are transformers', so a
saved folder opens with ``transformers.BertForSequenceClassification`` /
``BertForTokenClassification`` / ``BertForQuestionAnswering`` / ``BertForMultipleChoice``
and gives the same logits.
As there, the token and span heads use no pooler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bertflow.trainer.model import BertConfig, BertModel, init_weights


@dataclass
class HeadConfig(BertConfig):
    """A BERT config plus what a head needs; ``to_hf`` writes these keys too (they are
    dataclass fields), in the form transformers reads."""

    id2label: dict[int, str] = field(default_factory=dict)
    classifier_dropout: float | None = None

    def __post_init__(self):
        super().__post_init__()
        self.id2label = {int(k): v for k, v in self.id2label.items()}

    @classmethod
    def for_labels(cls, encoder: BertConfig, labels: list[str], **kw) -> "HeadConfig":
        base = {k: v for k, v in asdict(encoder).items() if k not in ("id2label", "classifier_dropout")}
        return cls(**base, id2label=dict(enumerate(labels)), **kw)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def to_hf(self, architectures: list[str] | None = None) -> dict:
        out = super().to_hf(architectures)
        out["id2label"] = {str(i): label for i, label in sorted(self.id2label.items())}
        out["label2id"] = {label: i for i, label in sorted(self.id2label.items())}
        out["num_labels"] = self.num_labels
        if self.num_labels == 1:  # one output is a regression head, as transformers reads it
            out["problem_type"] = "regression"
        return out


def _dropout(config: HeadConfig) -> nn.Dropout:
    p = config.classifier_dropout
    return nn.Dropout(config.hidden_dropout_prob if p is None else p)


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] -> dropout -> linear: ``forward -> logits [B, num_labels]``."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = _dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        # the pooler reads [CLS] alone, so the last layer computes only that row (its keys
        # and values still cover the sequence): the same logits for ~1/L less compute
        cls_only = input_ids.new_zeros(input_ids.shape[0], 1)
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask, only_at=cls_only)
        return self.classifier(self.dropout(pooled))


class BertForTokenClassification(nn.Module):
    """Every token -> dropout -> linear: ``forward -> logits [B, S, num_labels]``."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = _dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, only_at=None) -> torch.Tensor:
        """With ``only_at`` ([B, Q] positions), the logits at those positions alone, [B, Q,
        num_labels]: the last layer then computes just those rows (training needs only the
        labelled word pieces; see ``bertflow.trainer.model.BertEncoder``)."""
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask, only_at=only_at)
        return self.classifier(self.dropout(sequence_output))


class BertForQuestionAnswering(nn.Module):
    """Every token -> linear to (start, end): ``forward -> (start_logits, end_logits)``,
    each [B, S]. transformers' QA head has no dropout, nor does this one."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        init_weights(self.qa_outputs, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        sequence_output, _ = self.bert(input_ids, token_type_ids, attention_mask)
        start, end = self.qa_outputs(sequence_output).unbind(-1)
        return start, end


class BertForMultipleChoice(nn.Module):
    """N endings per example, each pooled [CLS] -> dropout -> linear to one score:
    ``forward`` takes [B, N, S] inputs and returns ``logits [B, N]``."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = _dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        examples, endings = input_ids.shape[:2]
        flat = [None if t is None else t.flatten(0, 1) for t in (input_ids, token_type_ids, attention_mask)]
        # as in BertForSequenceClassification: the last layer computes the [CLS] row alone
        _, pooled = self.bert(*flat, only_at=flat[0].new_zeros(flat[0].shape[0], 1))
        return self.classifier(self.dropout(pooled)).view(examples, endings)
