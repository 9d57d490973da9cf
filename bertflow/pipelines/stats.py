"""The statistics of the examples job's ``stats.json``: counts per batch of instances,
summed by a Beam combiner, then summarized per split."""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from bertflow.pipelines.instances import InstanceBatch


def batch_counts(batch: InstanceBatch, max_seq_length: int, mask_id: int) -> dict:
    """The statistics' counts of a batch (summed over batches, then ``summarize``d)."""
    lengths = np.diff(batch.offsets)
    where = np.repeat(batch.offsets[:-1], np.diff(batch.mask_offsets)) + batch.masked_lm_positions
    token = batch.input_ids[where]
    mask = token == mask_id
    kept = ~mask & (token == batch.masked_lm_ids)
    return {
        "lengths": np.bincount(np.minimum(lengths, max_seq_length), minlength=max_seq_length + 1).tolist(),
        "random_next": int(batch.next_sentence_label.sum()),
        "short_target": int(batch.short_target.sum()),
        "masked": len(where),
        "mask": int(mask.sum()),
        "kept": int(kept.sum()),
        "random": int(len(where) - mask.sum() - kept.sum()),
    }


def add_counts(a: dict, b: dict) -> dict:
    return {k: [x + y for x, y in zip(a[k], b[k])] if k == "lengths" else a[k] + b[k] for k in a}


def zero_counts(max_seq_length: int) -> dict:
    return {"lengths": [0] * (max_seq_length + 1), "random_next": 0, "short_target": 0, "masked": 0, "mask": 0, "kept": 0, "random": 0}


def summarize(lengths: list[int], random_next: int, short_target: int | None, masked: int, mask: int, random_: int, kept: int) -> dict:
    """The statistics of one split from its counts; ``lengths[n]`` instances have n tokens.
    (The benchmark applies the same function to the original generator's output.)"""
    instances = sum(lengths)
    tokens = sum(n * c for n, c in enumerate(lengths))
    max_len = len(lengths) - 1
    width = max(1, (max_len + 15) // 16)
    histogram = {}  # "lo-hi" tokens -> instances
    for lo in range(1, max_len + 1, width):
        hi = min(max_len, lo + width - 1)
        histogram[f"{lo}-{hi}"] = sum(lengths[lo : hi + 1])

    def share(n, d):
        return round(n / d, 6) if d else 0.0

    return {
        "instances": instances,
        "tokens": tokens,
        "mean_length": share(tokens, instances),
        "short_share": share(sum(lengths[: max_len // 2]), instances),  # under half the max length
        "full_share": share(lengths[max_len], instances),
        "short_target_share": share(short_target, instances) if short_target is not None else None,
        "nsp_random_rate": share(random_next, instances),
        "masked_tokens": masked,
        "masked_per_token": share(masked, tokens),
        "mask_share": share(mask, masked),
        "random_share": share(random_, masked),
        "kept_share": share(kept, masked),
        "length_histogram": histogram,
    }


class SumCounts(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, acc, counts):
        return counts if acc is None else add_counts(acc, counts)

    def merge_accumulators(self, accs):
        out = None
        for acc in accs:
            if acc is not None:
                out = acc if out is None else add_counts(out, acc)
        return out

    def extract_output(self, acc):
        return acc



