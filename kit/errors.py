"""One-line errors for mistakes a user can fix, and the figures that make an out-of-memory line one a user can act
on (kit/run/failures.py prints them)."""

import re

from ray.exceptions import RayTaskError


class KitError(Exception):
    """A mistake in config, data, env or reward code. The message names the problem and the fix."""


# torch's message; while CUDA graphs hold memory it adds "with X allocated in private pools (e.g., CUDA Graphs)", and
# may then end there
TORCH_FIGURES = re.compile(r"Tried to allocate (?P<asked>[\d.]+ \w+)\. GPU \d+ has a total capacity of (?P<total>[\d.]+ \w+)"
                           r".*?(?P<allocated>[\d.]+ \w+) is allocated by PyTorch,?"
                           r"(?: with (?P<graphs>[\d.]+ \w+) allocated in private pools[^)]*\),?)?"
                           r"(?: and (?P<cached>[\d.]+ \w+) is reserved)?", re.DOTALL)


def torch_memory_figures(message: str) -> str:
    """torch's figures from its out-of-memory message, in a parenthesis ("" if it has none): how much a phase holds,
    how much of it CUDA graphs' pools hold (the hf sampler's), and how much the allocator keeps cached but unused
    (fragmentation) say which key to change."""
    if not (found := TORCH_FIGURES.search(message)):
        return ""
    graphs = f" ({found['graphs']} of it in CUDA graphs' pools)" if found["graphs"] else ""
    cached = f" and {found['cached']} cached but unused" if found["cached"] else ""
    return f" (asked for {found['asked']} more with {found['allocated']} allocated{graphs}{cached}, of {found['total']})"


def out_of_memory(err: RayTaskError) -> bool:
    """A worker's task that failed for want of GPU memory (torch's OutOfMemoryError, or CUDA's own message)."""
    return type(getattr(err, "cause", None)).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(err)
