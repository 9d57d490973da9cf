"""How data/finetune/similarity and data/finetune/choice were made (rerun: the same bytes).

- ``similarity`` (regression, STS-B-like): SimLex-999's 999 word pairs with their mean human
  similarity (0-10), from the gensim 4.4.0 wheel's ``gensim/test/test_data/simlex999.txt``,
  shuffled (seed 0) and split 700 train / 299 dev; columns ``word1,word2,score``.
- ``choice`` (multiple choice, SWAG-like), from the Austen novels in data/books: a real
  sentence is the context, the sentence the book has next is the right ending, and three
  sentences of the same book at least 200 sentences away, each within a quarter of the
  right ending's length in words (so that length tells nothing), are the wrong ones, in a
  shuffled order. Contexts and endings have 4 to 25 words. Train: 100 from each of four
  novels; dev: 150 from each of the two others (no book in both). Columns
  ``id,sent1,ending0,ending1,ending2,ending3,label``.
- ``completion`` (multiple choice, SWAG-like, the benchmark's set: twice the questions of
  ``choice``), from the same novels: a real sentence of 10 to 30 words is cut
  after half its words; the first half is the context, its real second half the right
  ending, and the second halves of three other sentences of the same book at least 200
  sentences away, each within a quarter of the right ending's length in words, the wrong
  ones, in a shuffled order. Train: 200 from each of the four train novels; dev: 200 from
  each of the two others. The same columns.

    python benchmarks/finetune_data.py --simlex PATH/TO/simlex999.txt
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertflow.pipelines.books import book_document  # noqa: E402

OUT = ROOT / "data" / "finetune"
TRAIN_BOOKS = {"emma": 100, "mansfield-park": 100, "pride-and-prejudice": 100, "sense-and-sensibility": 100}
DEV_BOOKS = {"northanger-abbey": 150, "persuasion": 150}
ENDINGS = 4
MIN_WORDS, MAX_WORDS = 4, 25
MIN_DISTANCE = 200
COMPLETION_WORDS = (10, 30)
COMPLETION_TRAIN, COMPLETION_DEV = 200, 200  # questions per novel


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def similarity(simlex: Path) -> None:
    pairs = []
    for line in simlex.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        word1, word2, score = line.split("\t")
        pairs.append([word1, word2, score])
    if len(pairs) != 999:
        raise ValueError(f"{simlex}: {len(pairs)} pairs, SimLex-999 has 999")
    random.Random(0).shuffle(pairs)
    write_csv(OUT / "similarity/train.csv", ["word1", "word2", "score"], pairs[:700])
    write_csv(OUT / "similarity/dev.csv", ["word1", "word2", "score"], pairs[700:])


def book_questions(name: str, count: int, rng: random.Random) -> list[list]:
    document = book_document(str(ROOT / f"data/books/austen-{name}.txt"), name, lambda *a, **k: None)
    sentences = document["sentences"]
    words = [len(s.split()) for s in sentences]
    fits = [MIN_WORDS <= n <= MAX_WORDS for n in words]
    contexts = [i for i in range(len(sentences) - 1) if fits[i] and fits[i + 1]]
    rows = []
    for i in rng.sample(contexts, len(contexts)):
        right = words[i + 1]
        others = [j for j in range(len(sentences)) if fits[j] and abs(j - i) >= MIN_DISTANCE
                  and abs(words[j] - right) <= right / 4 and sentences[j] != sentences[i + 1]]
        if len(others) < ENDINGS - 1:
            continue
        endings = [sentences[i + 1]] + [sentences[j] for j in rng.sample(others, ENDINGS - 1)]
        order = rng.sample(range(ENDINGS), ENDINGS)
        rows.append([f"{name}-{i}", sentences[i], *(endings[k] for k in order), order.index(0)])
        if len(rows) == count:
            return rows
    raise ValueError(f"{name}: only {len(rows)} questions, {count} wanted")


def choice() -> None:
    rng = random.Random(0)
    header = ["id", "sent1"] + [f"ending{k}" for k in range(ENDINGS)] + ["label"]
    for split, books in (("train", TRAIN_BOOKS), ("dev", DEV_BOOKS)):
        rows = [row for name, count in books.items() for row in book_questions(name, count, rng)]
        rng.shuffle(rows)
        write_csv(OUT / f"choice/{split}.csv", header, rows)


def completion_questions(name: str, count: int, rng: random.Random) -> list[list]:
    """``count`` questions from one novel: a sentence's first half, its real second half
    and three other sentences' second halves of about the same length."""
    document = book_document(str(ROOT / f"data/books/austen-{name}.txt"), name, lambda *a, **k: None)
    halves = []  # (sentence index, first half, second half, words in the second half)
    for i, sentence in enumerate(document["sentences"]):
        words = sentence.split()
        if COMPLETION_WORDS[0] <= len(words) <= COMPLETION_WORDS[1]:
            cut = len(words) // 2
            halves.append((i, " ".join(words[:cut]), " ".join(words[cut:]), len(words) - cut))
    rows = []
    for i, first, right, n in rng.sample(halves, len(halves)):
        others = [h[2] for h in halves if abs(h[0] - i) >= MIN_DISTANCE and abs(h[3] - n) <= n / 4 and h[2] != right]
        if len(others) < ENDINGS - 1:
            continue
        endings = [right] + rng.sample(others, ENDINGS - 1)
        order = rng.sample(range(ENDINGS), ENDINGS)
        rows.append([f"{name}-{i}", first, *(endings[k] for k in order), order.index(0)])
        if len(rows) == count:
            return rows
    raise ValueError(f"{name}: only {len(rows)} questions, {count} wanted")


def completion() -> None:
    rng = random.Random(0)
    header = ["id", "sent1"] + [f"ending{k}" for k in range(ENDINGS)] + ["label"]
    for split, books, count in (("train", TRAIN_BOOKS, COMPLETION_TRAIN), ("dev", DEV_BOOKS, COMPLETION_DEV)):
        rows = [row for name in books for row in completion_questions(name, count, rng)]
        rng.shuffle(rows)
        write_csv(OUT / f"completion/{split}.csv", header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simlex", type=Path, required=True, help="gensim's test_data/simlex999.txt")
    args = parser.parse_args(argv)
    similarity(args.simlex)
    choice()
    completion()


if __name__ == "__main__":
    main()
