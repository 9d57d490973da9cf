"""Documents as token ids: what instance making needs of the vocabulary, a tokenized
document, and the encoder that tokenizes a bucket's sentences at once."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bertflow.contracts.layout import SpecialIds, read_vocab


@dataclass(frozen=True)
class Vocab:
    """What instance making needs from ``vocab.txt``: its size, the special ids, and which
    ids are ``##`` continuation pieces (for whole-word masking)."""

    size: int
    cls_id: int
    sep_id: int
    mask_id: int
    continuation: np.ndarray = field(repr=False)  # bool per id

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], where: str = "vocab.txt") -> "Vocab":
        ids = SpecialIds.of(list(tokens), where)
        continuation = np.fromiter((t.startswith("##") for t in tokens), dtype=bool, count=len(tokens))
        return cls(ids.size, ids.cls, ids.sep, ids.mask, continuation)

    @classmethod
    def read(cls, url: str) -> "Vocab":
        """The vocabulary of the vocab.txt at ``url``."""
        return cls.from_tokens(read_vocab(url), url)


@dataclass
class Document:
    """A tokenized document: every sentence's ids concatenated, and where each starts."""

    id: str
    tokens: np.ndarray  # int32, all sentences back to back
    bounds: np.ndarray  # int64, sentence i is tokens[bounds[i]:bounds[i + 1]]


class SentenceEncoder:
    """Token ids of many sentences, each distinct word encoded once.

    BERT's normalizer works character by character and its pre-tokenizer splits at every
    space, so a sentence's ids are its space-separated words' ids back to back. Words
    repeat (Zipf), so the ids of the words seen lately are kept, and only new words go
    through ``tokenizers``; the rest is dict lookups and numpy gathers. The cache is
    cleared before it would pass ``max_words`` words (one call's words are always kept),
    so memory does not grow with the corpus.

    A tokenizer whose pre-tokenizer or normalizer is not BERT's (or which has an added
    token with a space in it) may tokenize across spaces: then every sentence goes through
    ``tokenizers`` whole.
    """

    def __init__(self, tokenizer, max_words: int = 1 << 18):
        self.tokenizer = tokenizer
        self.max_words = max_words
        self.by_word = type(tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer" and (
            tokenizer.normalizer is None or type(tokenizer.normalizer).__name__ == "BertNormalizer"
        ) and not any(" " in t.content for t in tokenizer.get_added_tokens_decoder().values())
        self.words = 0  # non-empty space-separated words encoded so far (a counter)
        self._clear()

    def _clear(self):
        self.index: dict[str, int] = {}  # word -> its row in starts / lengths
        self.starts = np.zeros(0, np.int64)  # where each word's ids start in `ids`
        self.lengths = np.zeros(0, np.int64)
        self.ids = np.zeros(0, np.int32)

    def _encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(all ids back to back, ids per text), from ``tokenizers`` directly."""
        ids = [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())), lengths

    def encode(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every sentence's ids back to back as int32, ids per sentence)."""
        if not self.by_word:
            self.words += sum(map(len, map(str.split, sentences)))
            return self._encode(sentences)
        split = [s.split(" ") for s in sentences]
        words = list(itertools.chain.from_iterable(split))
        self.words += len(words) - words.count("")
        distinct = set(words)
        new = list(distinct - self.index.keys())
        if len(self.index) + len(new) > self.max_words:
            self._clear()
            new = list(distinct)
        if new:
            ids, lengths = self._encode(new)
            starts = np.zeros(len(new), np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            self.index.update(zip(new, range(len(self.index), len(self.index) + len(new))))
            self.starts = np.concatenate([self.starts, starts + len(self.ids)])
            self.lengths = np.concatenate([self.lengths, lengths])
            self.ids = np.concatenate([self.ids, ids])
        rows = np.fromiter(map(self.index.__getitem__, words), dtype=np.int64, count=len(words))
        word_lengths = self.lengths[rows]
        tokens = self.ids[ranges(self.starts[rows], word_lengths)]
        # every sentence has at least one word ("".split(" ") == [""])
        first_word = np.zeros(len(split), np.int64)
        np.cumsum(np.fromiter(map(len, split), dtype=np.int64, count=len(split))[:-1], out=first_word[1:])
        return tokens, np.add.reduceat(word_lengths, first_word) if len(split) else np.zeros(0, np.int64)


def tokenize_documents(encoder: SentenceEncoder, docs: Sequence[tuple[str, Sequence[str]]]) -> list[Document | None]:
    """Tokenize many documents (``(id, sentences)``) in one call over all their sentences:
    the per-call overhead is paid once per bucket, not once per document. ``None`` where a
    document has no tokens."""
    tokens, lengths = encoder.encode([s for _, doc in docs for s in doc])
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    out, k = [], 0
    for doc_id, doc in docs:
        kept = lengths[k : k + len(doc)]
        kept = kept[kept > 0]  # empty sentences are dropped
        if not len(kept):
            out.append(None)
        else:
            bounds = np.zeros(len(kept) + 1, dtype=np.int64)
            np.cumsum(kept, out=bounds[1:])
            out.append(Document(doc_id, tokens[starts[k] : starts[k + len(doc)]], bounds))
        k += len(doc)
    return out


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths - starts, lengths)
