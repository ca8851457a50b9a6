"""Where the actor update's time goes, inside the real Ray worker: python bench/profile_update.py OUT_DIR [key=value ...]

Runs algorithm.main(overrides) (algorithm.py's keys) with Ray started here, so every worker process runs a setup
hook first. The hook wraps verl's TrainingWorker.train_mini_batch (the actor update) in torch.profiler for its
third call (step 3; steps 1-2 warm up), and writes OUT_DIR/update_profile_rank<R>.txt: the wall time of each
micro-batch (verl names them micro_batch<i>), then the operators with the most device time (CUDA, or CPU on a
machine without a GPU) and with the most host time. bench/profile_gpu.py times the model outside FSDP; this is
the kit's own path, FSDP engine and loss included.
  python bench/profile_update.py /tmp/prof env=bench/throughput_task.py model_path=/tmp/models/qwen2.5-0.5b \\
      batch_size=64 inference.max_response_length=1024 steps_per_epoch=3 save_every=0 val_every=0 resume=off
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILED_CALL = 3


def profile_third_update():
    """Worker setup hook: profile the third actor update of this process."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile
    from verl.workers.engine_workers import TrainingWorker

    update, calls = TrainingWorker.train_mini_batch, []

    def profiled(self, data):
        calls.append(None)
        if len(calls) != PROFILED_CALL or self.engine_config.forward_only:
            return update(self, data)
        on_gpu = torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            output = update(self, data)
            if on_gpu:
                torch.cuda.synchronize()
        wall = time.perf_counter() - start
        write_report(prof, wall, on_gpu)
        return output

    TrainingWorker.train_mini_batch = profiled


def write_report(prof, wall: float, on_gpu: bool):
    import torch

    events = prof.key_averages()
    device_key = "device_time_total" if on_gpu else "cpu_time_total"
    micro = sorted((e for e in events if e.key.startswith("micro_batch")), key=lambda e: int(e.key[len("micro_batch"):]))
    lines = [f"update wall {wall:.3f} s; micro-batches: {len(micro)}"]
    lines += [f"  {e.key}: host {e.cpu_time_total / 1e3:.1f} ms" + (f", device {e.device_time_total / 1e3:.1f} ms" if on_gpu else "")
              for e in micro]
    lines += ["", f"by device time ({device_key}):", events.table(sort_by=device_key, row_limit=30),
              "", "by host time (self):", events.table(sort_by="self_cpu_time_total", row_limit=30)]
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    out = Path(os.environ["PROFILE_OUT"]) / f"update_profile_rank{rank}.txt"
    out.write_text("\n".join(lines))


def main(out_dir: str, overrides: list[str]):
    import ray

    os.chdir(ROOT)  # algorithm.py reads config.yaml, env.py, my_reward.py from the repository root
    sys.path.insert(0, str(ROOT))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    os.environ["PROFILE_OUT"] = str(Path(out_dir).resolve())  # the workers inherit it
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": profile_third_update,
                          "env_vars": {"PROFILE_OUT": os.environ["PROFILE_OUT"]}})
    import algorithm

    algorithm.main(overrides)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
