"""How a run that fails reaches the user: a KitError, a Ray worker that died, a machine or GPU out of memory, as
one line on stderr (exit status 2) instead of a traceback, naming what to change and that the same command
resumes."""

import functools
import sys

from ray.exceptions import OutOfMemoryError as OutOfHostMemory, RayActorError, RayTaskError

from kit.errors import KitError, out_of_memory, torch_memory_figures
from kit.setup.cluster import dead_worker_node, where_worker_died
from kit.setup.memory import ADVICE, HOST_ADVICE


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
            print(f"\nverl-kit: error: a machine ran out of CPU memory and Ray stopped a worker: {HOST_ADVICE}, or "
                  "train a smaller model; then run the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(2)
        except (RayActorError, RayTaskError) as err:  # a worker killed, out of memory, crashed, or its node lost
            if node := dead_worker_node():  # on a cluster the survivors' collectives fail too: the node is the news
                print(f"\nverl-kit: error: Ray node {node} died during the step, and its workers with it: restart it "
                      "(or join another with as many GPUs) and run the same command to resume from the last checkpoint",
                      file=sys.stderr)
                sys.exit(2)
            if isinstance(err, RayTaskError) and out_of_memory(err):
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
