"""SIGINT (Ctrl-C) and SIGTERM (a scheduler's stop): the run finishes the step it is in, writes a checkpoint
and exits cleanly, so `resume=auto` continues from there. A second signal exits at once; a checkpoint being
written then is left under its hidden name and never taken for a complete one (kit/run/checkpoints.py)."""

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    def __init__(self):
        self.requested = None  # the signal's name once one arrived
        self.previous = {}

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            print(f"\n{signal.Signals(signum).name} again: stopping now, without a checkpoint of this step",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)  # at once, wherever the run is; Ray's processes share the driver's fate
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: finishing this step, then a checkpoint and exit (send it again to stop at once)",
              file=sys.stderr, flush=True)
