"""Where the actor update's time goes, inside the real Ray worker: python bench/profile_update.py OUT_DIR [key=value ...]

Runs algorithm.main(overrides) (algorithm.py's keys) with Ray started here, so every worker process runs a setup
hook first. The hook wraps verl's TrainingWorker.train_mini_batch (the actor update) in torch.profiler for its
third call (step 3; steps 1-2 warm up; PROFILE_CALL=N: the Nth), and writes OUT_DIR/update_profile_rank<R>.txt: the wall time of each
micro-batch (verl names them micro_batch<i>), then the operators with the most device time (CUDA, or CPU on a
machine without a GPU) and with the most host time; with PROFILE_TRACE=1 also update_trace_rank<R>.json.gz (chrome
trace). bench/profile_gpu.py times the model outside FSDP; this is the kit's own path, FSDP engine and loss included.
A/B switches for the benchmark only: PROFILE_EAGER_LOGPROBS=1 runs kit/patches/token_log_probs op by op on the GPU too (as
before it was compiled); PROFILE_ADAM=fused|foreach builds verl's AdamW with that implementation;
PROFILE_COMPILE_LAYERS=1 puts each decoder layer's forward through torch.compile (dynamic shapes);
PROFILE_FSDP_UNITS=layers wraps each decoder layer as its own FSDP unit (verl's default) on one worker too.
PROFILE_PYTHON=1 profiles the third update with cProfile instead (update_python_rank<R>.txt: Python functions by
own and by cumulative time). PROFILE_SYNCS=1 (a GPU) runs it with CUDA's synchronizing calls reported
(torch.cuda.set_sync_debug_mode) and counts them by the Python lines that made them (update_syncs_rank<R>.txt):
the 0.5B shape's update (prof-qwen-1024, H200) had 627 stream synchronizations taking 0.99 s.
  python bench/profile_update.py /tmp/prof env=bench/throughput_task.py model_path=/tmp/models/qwen2.5-0.5b \\
      batch_size=64 inference.max_response_length=1024 steps_per_epoch=3 save_every=0 val_every=0 resume=off
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILED_CALL = int(os.environ.get("PROFILE_CALL", "3"))  # PROFILE_CALL=1: the first update, warm-up and all


def profile_third_update():
    """Worker setup hook: profile the third actor update of this process (PROFILE_CALL: another)."""
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
        if os.environ.get("PROFILE_PYTHON") == "1":
            return python_profiled(update, self, data, on_gpu)
        if os.environ.get("PROFILE_SYNCS") == "1":
            return syncs_counted(update, self, data)
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
    apply_switches()


def apply_switches():
    sys.path.insert(0, str(ROOT))  # the hook runs before the worker can import the kit
    from kit.patches import token_log_probs
    from verl.workers.config import optimizer

    if os.environ.get("PROFILE_EAGER_LOGPROBS") == "1":
        token_log_probs._passes = lambda logits: (token_log_probs.log_norm_and_picked, token_log_probs.grad_of_logits,
                                                  token_log_probs.CPU_CHUNK_ROWS)
    if os.environ.get("PROFILE_COMPILE_LAYERS") == "1":
        import torch
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

        initialize = FSDPEngine.initialize

        def initialize_and_compile(self):
            initialize(self)
            for layer in self.module.model.layers:  # FSDP's hooks stay outside the compiled forward
                layer.forward = torch.compile(layer.forward, dynamic=True)

        FSDPEngine.initialize = initialize_and_compile
    if os.environ.get("PROFILE_FSDP_UNITS") == "layers":  # verl's default: an FSDP unit per decoder layer
        from verl.workers.engine.fsdp import transformer_impl

        apply_fsdp2 = transformer_impl.apply_fsdp2
        transformer_impl.apply_fsdp2 = lambda model, kwargs, config: apply_fsdp2(model, kwargs, {"wrap_policy": {}})
    implementation = os.environ.get("PROFILE_ADAM")
    if implementation:
        build = optimizer.build_optimizer

        def build_with(parameters, config):
            overrides = {**(config.override_optimizer_config or {}), implementation: True}
            return build(parameters, dataclasses.replace(config, override_optimizer_config=overrides))

        optimizer.build_optimizer = build_with


def python_profiled(update, worker, data, on_gpu: bool):
    """PROFILE_PYTHON=1: the update under cProfile instead (host time by Python function, what torch.profiler
    lumps into each micro-batch's self time); writes update_python_rank<R>.txt."""
    import cProfile
    import io
    import pstats

    import torch

    profiler = cProfile.Profile()
    profiler.enable()
    output = update(worker, data)
    if on_gpu:
        torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    (Path(os.environ["PROFILE_OUT"]) / f"update_python_rank{rank}.txt").write_text(text.getvalue())
    return output


def syncs_counted(update, worker, data):
    """PROFILE_SYNCS=1: the update with every synchronizing CUDA call reported as a warning, counted by the last
    Python frames that made it; writes update_syncs_rank<R>.txt, most frequent first."""
    import collections
    import traceback
    import warnings

    import torch

    counts = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchronizing" in str(message):
            frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename][-4:]
            counts[" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))] += 1

    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            output = update(worker, data)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    lines = [f"{sum(counts.values())} synchronizing calls in the update"]
    lines += [f"{count:6d}  {where}" for where, count in counts.most_common()]
    (Path(os.environ["PROFILE_OUT"]) / f"update_syncs_rank{rank}.txt").write_text("\n".join(lines) + "\n")
    return output


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
    if os.environ.get("PROFILE_TRACE") == "1":
        prof.export_chrome_trace(str(out.with_name(f"update_trace_rank{rank}.json")))
        subprocess.run(["gzip", "-f", str(out.with_name(f"update_trace_rank{rank}.json"))], check=True)


def main(out_dir: str, overrides: list[str]):
    import ray

    os.chdir(ROOT)  # algorithm.py reads config.yaml, env.py, my_reward.py from the repository root
    sys.path.insert(0, str(ROOT))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    os.environ["PROFILE_OUT"] = str(Path(out_dir).resolve())  # the workers inherit it
    ray.init(include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": profile_third_update,
                          "env_vars": {key: value for key, value in os.environ.items() if key.startswith("PROFILE_")}})
    import algorithm

    algorithm.main(overrides)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
