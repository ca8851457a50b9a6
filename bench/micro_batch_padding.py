"""How many tokens the update's padded micro-batches hold for each real one, for long-tailed response lengths: verl's
arrangement (rearrange_micro_batches, which balances the sum of squared lengths across micro-batches, as its
remove-padding path wants) against the kit's (kit/patches/micro_batches.py: rows sorted by length, filled while
rows x longest row fits the token budget).
Without flash-attn the kit trains on padded micro-batches (each row padded to its micro-batch's longest), so
that ratio is the update's work over the work its real tokens need. CPU only, a few seconds.

  python bench/micro_batch_padding.py [ROWS] [PROMPT_TOKENS]   # 512 rows, 108-token prompts by default
"""

import math
import sys
from pathlib import Path

import numpy as np
import torch
from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for kit
from kit.patches.micro_batches import by_length  # noqa: E402  the kit's arrangement


def verls(lengths: list[int], budget: int) -> list[list[int]]:
    """verl 0.9.1's partition: ceil(tokens / budget) micro-batches balanced by workload, more until each fits."""
    count = math.ceil(sum(lengths) / budget)
    workloads = calculate_workload(torch.tensor(lengths)).tolist()
    while True:
        parts = get_seqlen_balanced_partitions(workloads, count, equal_size=False)
        if all(sum(lengths[i] for i in part) <= budget for part in parts):
            return parts
        count += 1



def padded(lengths: list[int], parts: list[list[int]]) -> int:
    return sum(len(part) * max(lengths[i] for i in part) for part in parts)


def main(rows: int, prompt: int):
    rng = np.random.default_rng(0)
    print("max new tokens, budget: micro-batches and padded / real tokens, verl's arrangement | sorted")
    for limit in (4096, 16384):
        lengths = (np.minimum(rng.geometric(4 / limit, rows), limit) + prompt).tolist()  # the long-tail workload's
        for budget in (16384, 32768, 65536):
            if budget >= limit + prompt:
                ours, theirs = by_length(lengths, budget), verls(lengths, budget)
                real = sum(lengths)
                print(f"{limit:>6} {budget:>6}: {len(theirs):>3} {padded(lengths, theirs) / real:.2f}x | "
                      f"{len(ours):>3} {padded(lengths, ours) / real:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512, int(sys.argv[2]) if len(sys.argv) > 2 else 108)
