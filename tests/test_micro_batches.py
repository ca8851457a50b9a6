"""kit/patches/micro_batches.py: the update's micro-batches hold rows of like length, within the token budget once
padded, every row once, in verl's return format (the equal losses and gradients: tests/test_workers.py)."""

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from verl.utils.seqlen_balancing import restore_dynamic_batch

from kit.patches.micro_batches import by_length, rearrange_micro_batches, split_to


def long_tailed_lengths(rows=512, limit=4096, prompt=108) -> list[int]:
    """The long-tail workload's row lengths: geometric responses of mean limit/4, cut at the limit, plus the prompt."""
    return (np.minimum(np.random.default_rng(0).geometric(4 / limit, rows), limit) + prompt).tolist()


def padded(lengths, parts) -> int:
    return sum(len(part) * max(lengths[row] for row in part) for part in parts)


@pytest.mark.parametrize("budget", [8192, 32768, 65536])
def test_micro_batches_of_like_length_stay_within_the_budget_once_padded(budget):
    lengths = long_tailed_lengths()
    parts = by_length(lengths, budget)
    assert sorted(row for part in parts for row in part) == list(range(len(lengths)))  # every row once
    assert all(len(part) * max(lengths[row] for row in part) <= budget for part in parts)
    assert padded(lengths, parts) <= 1.15 * sum(lengths)  # verl's arrangement: 2.9-3.5x here
    assert len(parts) <= 1.25 * np.ceil(sum(lengths) / budget)


def test_a_row_longer_than_the_budget_is_a_micro_batch_of_its_own():
    assert by_length([10, 300, 20], budget=100) == [[1], [2, 0]]


def test_ranks_split_their_largest_micro_batches_to_match_the_others_count():
    parts = split_to([[0, 1, 2, 3], [4], [5, 6]], 5)
    assert len(parts) == 5 and sorted(row for part in parts for row in part) == list(range(7))
    assert max(len(part) for part in parts) == 2
    with pytest.raises(ValueError, match="cannot make 4 micro-batches of 3 rows"):
        split_to([[0], [1], [2]], 4)


def test_verls_format_in_and_out_and_the_order_restored():
    lengths = [3, 9, 1, 7, 5, 2]
    ids = torch.nested.as_nested_tensor([torch.full((n,), row) for row, n in enumerate(lengths)], layout=torch.jagged)
    batch = TensorDict({"input_ids": ids, "row": torch.arange(6)}, batch_size=6)
    micro_batches, parts = rearrange_micro_batches(batch, max_token_len=10)
    assert parts == [[1], [3], [4, 0], [5, 2]] and [mb["row"].tolist() for mb in micro_batches] == parts
    rows = torch.cat([mb["row"] for mb in micro_batches])
    assert restore_dynamic_batch(rows, parts).tolist() == list(range(6))  # how verl puts outputs back in order
