"""verl's micro-batch planning, skipped when one worker's rows all fit one micro-batch.

With a token budget per micro-batch (verl's dynamic batch size), verl's `rearrange_micro_batches` balances the rows
over micro-batches (Karmarkar-Karp) and copies each micro-batch out of the batch, unbinding and rebuilding every
nested tensor. When everything fits one micro-batch (the default task's 128 rows of about 48 tokens against 16,384
tokens) that work only reorders the rows, and verl reorders its outputs back afterwards: about 28 ms of host time
in each update on an H200 (bench/results/lease5/prof-default-pyprof). Then the batch itself is the micro-batch.
"""

import torch.distributed as dist
from verl.workers.engine import utils as engine_utils

_verl_rearrange = engine_utils.rearrange_micro_batches


def rearrange_micro_batches(batch, max_token_len, dp_group=None, num_batches_divided_by=None, min_num_micro_batch=None,
                            **options):
    """verl's signature and result: (micro-batches, each one's row indices in the batch)."""
    rows = batch.batch_size[0]
    if _tokens(batch) <= max_token_len and (min_num_micro_batch or 1) == 1 and (num_batches_divided_by or 1) == 1 \
            and _single_rank(dp_group) and options.get("force_group_size", 1) == 1:
        return [batch.copy()], [list(range(rows))]  # a shallow copy: keys verl adds to it stay off the batch
    return _verl_rearrange(batch, max_token_len, dp_group=dp_group, num_batches_divided_by=num_batches_divided_by,
                           min_num_micro_batch=min_num_micro_batch, **options)


def _tokens(batch) -> int:
    input_ids = batch["input_ids"]
    return int(input_ids.offsets().diff().sum()) if input_ids.is_nested else int(batch["attention_mask"].sum())


def _single_rank(dp_group) -> bool:
    """verl makes the ranks of dp_group agree on a count of micro-batches: only a group of one needs no say."""
    return dp_group is None or not dist.is_initialized() or dist.get_world_size(dp_group) == 1


def install():
    """In a worker process: verl's engines plan their micro-batches through this."""
    engine_utils.rearrange_micro_batches = rearrange_micro_batches
