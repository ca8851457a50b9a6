"""User code (reward functions, environments) in daemon threads: a call that hangs is abandoned after its timeout
and cannot keep a finished run from exiting."""

import threading
from concurrent.futures import Future, ThreadPoolExecutor


class DaemonThreads(ThreadPoolExecutor):
    """Each call in a daemon thread of its own. verl's reward manager runs a plain reward function in its event
    loop's default executor; a ThreadPoolExecutor's threads are joined at exit, so one hung call would keep
    the finished run from ever exiting. A daemon thread is simply left behind. (asyncio accepts only a
    ThreadPoolExecutor as default executor; this one never starts the pool's own threads.)"""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()

        def run():
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:
                future.set_exception(err)

        threading.Thread(target=run, daemon=True).start()
        return future
