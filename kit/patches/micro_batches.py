"""Micro-batches of rows of like length: verl's rearrange_micro_batches (verl/utils/seqlen_balancing.py, as
verl/workers/engine/utils.py's prepare_micro_batches calls it) for the padded micro-batches the kit trains on.

verl splits a batch into as few micro-batches as its token budget allows and balances the sum of squared lengths
across them, which is what its remove-padding path (flash-attn's packed sequences) wants. Without flash-attn each
micro-batch is padded to its longest row, and balancing puts long and short rows together: on 512 long-tailed rows
(mean a quarter of 4,096 tokens) verl's micro-batches hold 2.9-3.5 padded tokens per real one, and exceed the budget
once padded (bench/micro_batch_padding.py, docs/benchmarks.md). Here rows are sorted by length, longest first, and a
micro-batch takes rows while their count times its first row's length fits the budget: 1.02-1.14 padded tokens per
real one, 10-20% more micro-batches, and never more padded tokens than the budget (unless one row alone is longer).

The loss is unchanged: verl's losses normalise each micro-batch by the global batch's tokens (or rows), so the sum of
the micro-batches' gradients does not depend on how rows are grouped. Every data-parallel rank runs the same number
of micro-batches (FSDP's collectives pair up per forward): a rank with fewer splits its largest micro-batches.
"""

import torch
import torch.distributed as dist
from verl.utils import tensordict_utils as tu
from verl.utils.device import get_device_name
from verl.utils.seqlen_balancing import rearrange_micro_batches as verls_rearrange
from verl.workers.engine import utils as engine_utils


def rearrange_micro_batches(batch, max_token_len, dp_group=None, num_batches_divided_by=None,
                            same_micro_num_in_dp=True, min_num_micro_batch=None, use_dynamic_bsz_balance=True,
                            force_group_size=1):
    """verl's signature and return value: the micro-batches (TensorDicts) and each one's row indices."""
    if force_group_size != 1 or num_batches_divided_by is not None or min_num_micro_batch is not None:
        return verls_rearrange(batch, max_token_len, dp_group, num_batches_divided_by, same_micro_num_in_dp,
                               min_num_micro_batch, use_dynamic_bsz_balance, force_group_size)  # not the kit's paths
    input_ids = batch["input_ids"]
    lengths = (input_ids.offsets().diff() if input_ids.is_nested else batch["attention_mask"].sum(-1)).tolist()
    parts = by_length(lengths, max_token_len)
    if dist.is_initialized() and same_micro_num_in_dp and dp_group is not None:
        count = torch.tensor([len(parts)], device=get_device_name())
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=dp_group)
        parts = split_to(parts, int(count.item()))
    return [tu.index_select_tensor_dict(batch, part) for part in parts], parts


def by_length(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices in micro-batches: longest first, each taking rows while rows x its longest fits the budget."""
    parts, current = [], []
    for row in sorted(range(len(lengths)), key=lambda row: (-lengths[row], row)):
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            parts.append(current)
            current = []
        current.append(row)
    return parts + [current] if current else parts


def split_to(parts: list[list[int]], count: int) -> list[list[int]]:
    """`count` micro-batches, the ones with the most rows halved until there are as many (halves pad less)."""
    parts = list(parts)
    while len(parts) < count:
        largest = max(range(len(parts)), key=lambda i: len(parts[i]))
        part = parts.pop(largest)
        if len(part) < 2:
            raise ValueError(f"cannot make {count} micro-batches of {sum(map(len, parts)) + 1} rows")
        parts[largest:largest] = [part[:len(part) // 2], part[len(part) // 2:]]
    return parts


def install():
    engine_utils.rearrange_micro_batches = rearrange_micro_batches
