"""BERT (Devlin et al. 2018) for pretraining, with transformers' parameter names.

The encoder is the paper's: learned position and segment embeddings, post-LayerNorm
blocks, exact (erf) GELU, a tanh pooler over [CLS]. The pretraining heads are the MLM
head (dense + GELU + LayerNorm, then a decoder tied to the word embeddings) and the
next-sentence head. Every parameter has the name it has in
``transformers.BertForPreTraining``, so state dicts load strictly in both directions and
an exported folder opens with ``transformers.BertForPreTraining.from_pretrained``.

Where the time goes, and what we do about it:

- attention is ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on
  GPU, the fused CPU kernel on CPU) with a boolean key-padding mask, dropout inside it;
- Q, K and V are one matmul (the three weights are concatenated on the fly, which keeps
  the transformers names and costs a copy of 3*H*H per layer);
- the MLM decoder (H x vocab, the largest matmul of a small BERT) runs only on the
  gathered masked positions, ~15% of the tokens, not on every token; so does the last
  encoder layer except its keys and values (nothing else reads its other rows);
- the loader pads per batch, and the encoder then skips the padding: between attentions
  it holds only the real tokens, packed (``TokenLayout``), so its matmuls, LayerNorms and
  dropout do no work on padding.

Sizes by name (``BertConfig.from_name``) follow the BERT tables (Turc et al. 2019 for the
small ones). Reading and writing transformers folders: ``bertflow.trainer.hf_folder``.

    python -m bertflow.trainer.model --name mini --vocab-size 30522     # prints the config and size
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import asdict, dataclass, fields
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bertflow.contracts.layout import IGNORE_INDEX

# layers, hidden, heads for the sizes of the BERT tables; intermediate is 4 * hidden
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}

# Keys transformers writes into a BERT config.json that say nothing our model uses
# (generation and output settings, labels, bookkeeping); any other unknown key is refused.
TRANSFORMERS_KEYS = frozenset({
    "_name_or_path", "_commit_hash", "_attn_implementation_autoset", "architectures", "model_type",
    "transformers_version", "torch_dtype", "dtype", "use_bfloat16", "torchscript", "tf_legacy_loss",
    "hidden_act", "position_embedding_type", "use_cache", "gradient_checkpointing", "output_past",
    "classifier_dropout", "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",
    "tokenizer_class", "prefix", "task_specific_params", "return_dict", "output_hidden_states",
    "output_attentions", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "tie_encoder_decoder", "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens",
})


# --------------------------------------------------------------------------- config


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_name(cls, name: str, vocab_size: int, **overrides) -> "BertConfig":
        """A size from the BERT tables: tiny, mini, small, medium, base, large."""
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}")
        layers, hidden, heads = SIZES[name]
        return cls(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                   num_attention_heads=heads, intermediate_size=4 * hidden, **overrides)

    @classmethod
    def from_hf(cls, hf: Mapping) -> "BertConfig":
        """From a transformers config.json dict. A key that is neither one of ours nor one
        transformers writes is an error (a typo would silently leave a default)."""
        if hf.get("model_type", "bert") != "bert":
            raise ValueError(f"not a BERT config: model_type is {hf.get('model_type')!r}")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (only 'gelu')")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported, got "
                             f"{hf['position_embedding_type']!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(hf) - names - TRANSFORMERS_KEYS)
        if unknown:
            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, names, 1)) else repr(k)
                     for k in unknown]
            raise ValueError(f"unknown BERT config keys {', '.join(hints)}; known: {', '.join(sorted(names))}")
        missing = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size"} - set(hf)
        if missing:
            raise ValueError(f"config.json lacks {sorted(missing)}")
        return cls(**{k: v for k, v in hf.items() if k in names and v is not None})

    def to_hf(self, architectures: list[str] | None = None) -> dict:
        """The transformers config.json dict."""
        out = {"architectures": architectures or ["BertForPreTraining"], "model_type": "bert"}
        out.update(asdict(self))
        out.update(hidden_act="gelu", position_embedding_type="absolute",
                   torch_dtype="float32")
        return out

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameters of the encoder (+ pooler), counted from the config."""
        h, i, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        per_layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h  # attn, ffn, 2 LayerNorms
        emb = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h
        return n * per_layer + h * h + h + (emb if embeddings else 0)


# --------------------------------------------------------------------------- encoder


class _PackRows(torch.autograd.Function):
    """``x.index_select(0, index)`` for an index of distinct rows, whose gradient is a copy
    of rows into zeros (``index_copy``) rather than ``index_select``'s accumulating
    backward, a scatter-add that CPUs run element by element."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, grad.shape[1]).index_copy(0, index, grad), None


class TokenLayout:
    """Where the real tokens of a padded [B, S] batch are, so that the encoder computes on
    them alone. Between attentions the hidden states are packed, [N, H] for the N real
    tokens: the linear layers, LayerNorms, GELU and dropout (nearly all of the work at
    BERT's lengths) then skip the padding. Attention alone needs [B, S]: it unpacks Q, K and V into it, with zeros
    at the padding the key mask hides, and packs its output back. (NVIDIA's BERT calls this
    "unpadding"; the numbers at the real tokens are the padded computation's.)

    Without padding the layout is the identity: [N, H] is [B * S, H], and SDPA gets no
    mask (its fastest path). Under ``torch.compile`` (``compile_model``) the layout is always
    packed: N is a data-dependent size that dynamo keeps symbolic, so one graph serves
    every batch of a shape, padded or not, without a graph break."""

    def __init__(self, attention_mask: torch.Tensor | None, batch: int, seq_len: int):
        self.batch, self.seq_len = batch, seq_len
        self.index = self.mask = None  # index: [N] flat positions b * S + s of the real tokens
        if attention_mask is None:
            return
        real = attention_mask.bool()
        # the all-real check reads the data: a compiled graph cannot branch on it
        if torch.compiler.is_compiling() or not bool(real.all()):
            self.mask = real[:, None, None, :]  # [B, 1, 1, S]: broadcasts over heads and queries
            self.index = real.flatten().nonzero().squeeze(1)
            # the packed row of each flat position (meaningful at real tokens only)
            self.packed_row = torch.cumsum(real.flatten(), 0) - 1

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, C] -> [N, C]."""
        x = x.reshape(self.batch * self.seq_len, x.shape[-1])
        return x if self.index is None else _PackRows.apply(x, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] -> [B, S, C], zeros at the padding."""
        if self.index is not None:
            x = x.new_zeros(self.batch * self.seq_len, x.shape[-1]).index_copy(0, self.index, x)
        return x.view(self.batch, self.seq_len, x.shape[-1])

    def rows(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The rows of packed ``x`` [N, H] at ``positions`` [B, Q] (real tokens) -> [B, Q, H]."""
        flat = positions.long() + torch.arange(self.batch, device=positions.device)[:, None] * self.seq_len
        if self.index is not None:
            flat = self.packed_row[flat]
        return x.index_select(0, flat.flatten()).view(*positions.shape, x.shape[-1])


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        # positions [0, S) broadcast over the batch; no buffer, so nothing extra in the state dict
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[:seq_len]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, layout: TokenLayout,
                queries: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [N, H] (the real tokens, see ``TokenLayout``) attends to itself -> [N, H];
        or, given ``queries`` [B, Q, H] (some rows of ``x``), only those rows attend to all
        of ``x`` and the result is [B, Q, H]."""
        b, s, h = layout.batch, layout.seq_len, x.shape[-1]
        if queries is None:
            # one matmul for Q, K, V; the weights stay three named parameters (transformers' names)
            w = torch.cat([self.query.weight, self.key.weight, self.value.weight])
            bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
            qkv = layout.unpack(F.linear(x, w, bias)).view(b, s, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, S, head_dim]
        else:
            w = torch.cat([self.key.weight, self.value.weight])
            bias = torch.cat([self.key.bias, self.value.bias])
            kv = layout.unpack(F.linear(x, w, bias)).view(b, s, 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
            q = self.query(queries).view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=layout.mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(b, q.shape[2], h)
        return out if queries is not None else layout.pack(out)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)  # post-LayerNorm


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, layout: TokenLayout,
                queries: torch.Tensor | None = None) -> torch.Tensor:
        residual = x if queries is None else queries
        return self.output(self.self(x, layout, queries), residual)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact erf GELU, as BERT's "gelu"


class BertOutput(BertSelfOutput):
    def __init__(self, config: BertConfig):
        nn.Module.__init__(self)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: torch.Tensor, layout: TokenLayout,
                queries: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention(x, layout, queries)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, layout: TokenLayout,
                only_at: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [N, H], the real tokens packed (see ``TokenLayout``) -> [B, S, H], zero at
        padding; or, with ``only_at`` [B, Q] positions, the output at those positions only,
        [B, Q, H]: the last layer then computes just those rows (its queries, output
        projection and feed-forward; keys and values still cover the whole sequence), which
        gives the same numbers as gathering after a full last layer at a fraction of its cost."""
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            if i == last and only_at is not None:
                return layer(x, layout, queries=layout.rows(x, only_at))
            x = layer(x, layout)
        return layout.unpack(x) if only_at is None else layout.rows(x, only_at)


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(sequence_output[:, 0]))


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialization: N(0, std) for matrices and embeddings, zero biases,
    LayerNorm at identity, the padding embedding zero."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertModel(nn.Module):
    """The encoder and the pooler: ``forward -> (sequence_output [B,S,H], pooled [B,H])``.

    With ``only_at`` ([B, Q] positions), ``sequence_output`` is the [B, Q, H] output at those
    positions alone, computed without the rest of the last layer (see ``BertEncoder``):
    what pretraining and token-level heads over a few positions need."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooler else None
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, only_at: torch.Tensor | None = None):
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds "
                             f"max_position_embeddings {self.config.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        layout = TokenLayout(attention_mask, *input_ids.shape)
        x = layout.pack(self.embeddings(input_ids, token_type_ids))
        if only_at is None:
            x = self.encoder(x, layout)
            return x, self.pooler(x) if self.pooler is not None else None
        # [CLS] (position 0) rides along as the first row, for the pooler
        cls = torch.zeros_like(only_at[:, :1])
        x = self.encoder(x, layout, only_at=torch.cat([cls, only_at], 1))
        pooled = self.pooler(x) if self.pooler is not None else None
        return x[:, 1:], pooled


# --------------------------------------------------------------------------- heads


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform, then a decoder whose weight is the word embedding matrix and whose bias
    is ``bias`` (both tied, as in transformers, so the state dict has the same keys)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        # built on the meta device: its own weight would be thrown away by the tie below
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


@dataclass
class PreTrainingLoss:
    """The pretraining loss and the counts for accuracies (sum them over batches/workers
    before dividing). ``loss = mlm_loss + nsp_loss``; each is a mean over its labels."""

    loss: torch.Tensor
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_correct: torch.Tensor
    mlm_count: torch.Tensor
    nsp_correct: torch.Tensor
    nsp_count: torch.Tensor


class BertForPreTraining(nn.Module):
    """BERT with the MLM and NSP heads.

    ``forward(input_ids, token_type_ids, attention_mask, masked_lm_positions)`` returns
    ``(mlm_logits [B, P, V], nsp_logits [B, 2])``. ``masked_lm_positions`` is ``[B, P]``,
    padded with 0 (position 0 is [CLS], never masked); the MLM head runs only on those
    gathered positions, and so does most of the last encoder layer. The labels that go with it, ``masked_lm_ids [B, P]``, are padded
    with ``IGNORE_INDEX`` (-100), so padded slots count nowhere; ``next_sentence_label``
    is 0 (B follows A), 1 (B is random) or -100 (no NSP for that example).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config, self.bert.embeddings.word_embeddings)
        self.tie_weights()
        # the decoder is the (already initialized) word embedding matrix: leave it alone
        for part in (self.cls.predictions.transform, self.cls.seq_relationship):
            part.apply(lambda m: init_weights(m, config.initializer_range))

    def tie_weights(self) -> None:
        """(Re)tie the decoder to the word embeddings and to ``cls.predictions.bias``;
        called again after anything that may replace the parameters (loading, ``to_empty``)."""
        pred = self.cls.predictions
        pred.decoder.weight = self.bert.embeddings.word_embeddings.weight
        pred.decoder.bias = pred.bias

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                masked_lm_positions: torch.Tensor | None = None):
        # the last layer and the MLM head run only at the masked positions (and [CLS]);
        # without positions, at every position (e.g. for inspection)
        masked, pooled = self.bert(input_ids, token_type_ids, attention_mask,
                                   only_at=masked_lm_positions)
        mlm_logits = self.cls.predictions(masked)
        nsp_logits = self.cls.seq_relationship(pooled)
        return mlm_logits, nsp_logits

    @staticmethod
    def loss(mlm_logits: torch.Tensor, nsp_logits: torch.Tensor, masked_lm_ids: torch.Tensor,
             next_sentence_label: torch.Tensor | None) -> PreTrainingLoss:
        """Cross-entropy (in fp32, whatever the autocast dtype) over the real masked
        positions and the NSP labels; labels equal to -100 are skipped."""
        labels = masked_lm_ids.reshape(-1).long()
        logits = mlm_logits.reshape(-1, mlm_logits.shape[-1]).float()
        valid = labels != IGNORE_INDEX
        mlm_count = valid.sum()
        # a batch without a single masked token is legal: its MLM loss is 0, not NaN
        mlm_loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
        mlm_loss = mlm_loss / mlm_count.clamp(min=1)
        mlm_correct = ((logits.argmax(-1) == labels) & valid).sum()
        if next_sentence_label is None:
            zero = mlm_loss.new_zeros(())
            return PreTrainingLoss(mlm_loss, mlm_loss, zero, mlm_correct, mlm_count,
                                   mlm_count.new_zeros(()), mlm_count.new_zeros(()))
        nsp_labels = next_sentence_label.reshape(-1).long()
        nsp_logits = nsp_logits.float()
        nsp_valid = nsp_labels != IGNORE_INDEX
        nsp_count = nsp_valid.sum()
        nsp_loss = F.cross_entropy(nsp_logits, nsp_labels, ignore_index=IGNORE_INDEX,
                                   reduction="sum") / nsp_count.clamp(min=1)
        nsp_correct = ((nsp_logits.argmax(-1) == nsp_labels) & nsp_valid).sum()
        return PreTrainingLoss(mlm_loss + nsp_loss, mlm_loss, nsp_loss, mlm_correct, mlm_count,
                               nsp_correct, nsp_count)


# --------------------------------------------------------------------------- compile


def compile_model(model: nn.Module, **options) -> nn.Module:
    """``torch.compile(model, **options)`` with the packed layout kept (``TokenLayout``).

    The real tokens' index comes from ``nonzero``, whose output size depends on the data;
    dynamo captures it as a symbolic size only with ``capture_dynamic_output_shape_ops``
    (else it breaks the graph there), so this sets that flag, process-wide."""
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    return torch.compile(model, **options)


# --------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Show a BERT config by size name, or the "
                                     "config and load report of a model folder.")
    parser.add_argument("--name", choices=sorted(SIZES), default="base")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--folder", help="a transformers model folder (any fsspec URL) to load")
    args = parser.parse_args(argv)
    if args.folder:
        from bertflow.trainer.hf_folder import load_pretrained

        model = load_pretrained(args.folder, BertForPreTraining, strict_encoder=True)
        config = model.config
        print(f"load report: {model.load_report}")
    else:
        config = BertConfig.from_name(args.name, args.vocab_size)
    print(json.dumps(asdict(config), indent=2))
    print(f"parameters: {config.num_parameters() / 1e6:.1f} M "
          f"({config.num_parameters(embeddings=False) / 1e6:.1f} M without embeddings)")


if __name__ == "__main__":
    main()
