"""One-line errors for mistakes a user can fix, and the wrapper that prints them instead of a traceback."""

import functools
import re
import sys

from ray.exceptions import OutOfMemoryError as OutOfHostMemory, RayActorError, RayTaskError


class KitError(Exception):
    """A mistake in config, data, env or reward code. The message names the problem and the fix."""


def one_line_errors(main):
    """Run `main`; a KitError, or a Ray worker that died, prints as one line on stderr and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KitError as err:
            # On a line of its own: a progress bar may be mid-line on stderr.
            print(f"\nverl-kit: error: {err}", file=sys.stderr)
            sys.exit(2)
        except OutOfHostMemory:  # Ray stopped workers as a machine's CPU memory ran low (its dump runs to pages)
            from kit.memory import HOST_ADVICE

            print(f"\nverl-kit: error: a machine ran out of CPU memory and Ray stopped a worker: {HOST_ADVICE}, or "
                  "train a smaller model; then run the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(2)
        except (RayActorError, RayTaskError) as err:  # a worker killed, out of memory, crashed, or its node lost
            from kit.cluster import dead_worker_node, where_worker_died  # here: kit.cluster imports this module

            if node := dead_worker_node():  # on a cluster the survivors' collectives fail too: the node is the news
                print(f"\nverl-kit: error: Ray node {node} died during the step, and its workers with it: restart it "
                      "(or join another with as many GPUs) and run the same command to resume from the last checkpoint",
                      file=sys.stderr)
                sys.exit(2)
            if isinstance(err, RayTaskError) and out_of_memory(err):
                from kit.memory import ADVICE

                # ray.get raises the error as a subclass of its cause's type, which may lack Ray's function_name
                where = f"a worker's {name}" if (name := getattr(err, "function_name", None)) else "a worker"
                figures = torch_memory_figures(f"{getattr(err, 'cause', '')} {err}")
                print(f"\nverl-kit: error: out of GPU memory in {where}{figures}: {ADVICE}; then run the same command "
                      "to resume from the last checkpoint", file=sys.stderr)
                sys.exit(2)
            if isinstance(err, RayTaskError):  # an error inside a worker: its traceback is what helps
                raise
            pid = f" (pid {err.actor_info.pid})" if getattr(getattr(err, "actor_info", None), "pid", None) else ""
            print(f"\nverl-kit: error: a Ray worker{pid}{where_worker_died(err)} died during the step (killed, out of "
                  "memory or crashed): run the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(2)

    return wrapper


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
