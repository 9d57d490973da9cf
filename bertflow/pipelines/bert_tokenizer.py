"""BERT's tokenizer as files: vocab.txt layout, tokenizer.json, and the transformers configs.

The word counting of the vocab job and the final tokenizer share the same components
(``tokenizers``' BertNormalizer and BertPreTokenizer: BERT's BasicTokenizer), so a
vocabulary is learned from exactly the words the tokenizer will later see.

    python -m bertflow.pipelines.bert_tokenizer --vocab vocab.txt --output folder/ [--cased]
"""

from __future__ import annotations

import argparse
import json
import posixpath
from collections import Counter

from bertflow.contracts.layout import CLS, MASK, PAD, SEP, SPECIALS, TOKENIZER, UNK, VOCAB, read_vocab
from bertflow.contracts.storage import write_bytes_atomic
MAX_INPUT_CHARS_PER_WORD = 100  # BERT's: a longer word is one [UNK]
MODEL_MAX_LENGTH = 512


def reserved_tokens(num_unused: int) -> list[str]:
    """The tokens before the learned ones, in bert-base-uncased's order: ``[PAD]``,
    ``[unused0]``..``[unused98]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``,
    ``[unused99]``.. (with fewer unused slots, the specials simply come sooner)."""
    unused = [f"[unused{i}]" for i in range(num_unused)]
    return [PAD, *unused[:99], UNK, CLS, SEP, MASK, *unused[99:]]


def normalizer(lowercase: bool):
    from tokenizers.normalizers import BertNormalizer

    # strip_accents=None follows lowercase, as BERT's BasicTokenizer does.
    return BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)


def pre_tokenizer():
    from tokenizers.pre_tokenizers import BertPreTokenizer

    return BertPreTokenizer()


class WordSplitter:
    """Text to the words the final tokenizer's WordPiece model sees."""

    def __init__(self, lowercase: bool):
        self._normalizer = normalizer(lowercase)
        self._pre_tokenizer = pre_tokenizer()

    def __call__(self, text: str) -> list[str]:
        return [w for w, _ in self._pre_tokenizer.pre_tokenize_str(self._normalizer.normalize_str(text))]


def build_tokenizer(vocab: list[str], lowercase: bool):
    """A ``tokenizers.Tokenizer`` equal to BERT's: WordPiece over ``vocab``, BERT
    normalization and pre-tokenization, ``[CLS] A [SEP] (B [SEP])`` and WordPiece decoding."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    ids = {tok: i for i, tok in enumerate(vocab)}
    missing = [t for t in SPECIALS if t not in ids]
    if missing:
        raise ValueError(f"the vocabulary lacks the special tokens {missing}; BERT needs {list(SPECIALS)}")
    if len(ids) != len(vocab):
        dupes = sorted(t for t, n in Counter(vocab).items() if n > 1)[:5]
        raise ValueError(f"the vocabulary repeats tokens, e.g. {dupes}")
    tok = Tokenizer(
        models.WordPiece(
            ids, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
        )
    )
    tok.normalizer = normalizer(lowercase)
    tok.pre_tokenizer = pre_tokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])],
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    # Specials are matched whole in raw text and never normalized, as in transformers.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok


def transformers_configs(lowercase: bool) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json, so that a folder with vocab.txt and
    tokenizer.json loads with ``AutoTokenizer.from_pretrained(folder)``."""
    specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "do_basic_tokenize": True,
        "never_split": None,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": True,
        **specials,
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": specials}


def tokenizer_files(vocab: list[str], lowercase: bool) -> dict[str, bytes]:
    """The bytes of vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    files = {
        VOCAB: "".join(t + "\n" for t in vocab).encode("utf-8"),
        TOKENIZER: build_tokenizer(vocab, lowercase).to_str(pretty=True).encode("utf-8"),
    }
    for name, obj in transformers_configs(lowercase).items():
        files[name] = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return files


def write_tokenizer_folder(vocab: list[str], lowercase: bool, folder: str) -> list[str]:
    """Write the four tokenizer files into ``folder`` (each atomically); their names."""
    files = tokenizer_files(vocab, lowercase)
    for name, data in files.items():
        write_bytes_atomic(posixpath.join(folder.rstrip("/"), name), data)
    return sorted(files)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", required=True, help="a vocab.txt (any fsspec URL)")
    ap.add_argument("--output", required=True, help="folder to write the tokenizer files into")
    ap.add_argument("--cased", action="store_true", help="keep case and accents (default: uncased)")
    args = ap.parse_args(argv)
    names = write_tokenizer_folder(read_vocab(args.vocab), not args.cased, args.output)
    print("wrote", ", ".join(names), "to", args.output)


if __name__ == "__main__":
    main()
