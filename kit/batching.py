"""Micro-batch sizes that always divide the rows a worker holds (verl asserts they do)."""


def micro_batch_size(rows_per_worker: int, limit: int) -> int:
    """The largest divisor of `rows_per_worker` that is at most `limit` (training.actor.batch_size_per_gpu)."""
    return max(size for size in range(1, min(limit, rows_per_worker) + 1) if rows_per_worker % size == 0)
