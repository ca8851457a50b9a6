"""Soak: 1,000 steps on CPU with the tiny model; memory, file handles, processes and disk must stay flat.

Issue 8. Runs `python algorithm.py` on the tiny model for 1,000 steps (checkpoint every 10, keep_last_n=2,
validation every 100) and samples every few seconds, with psutil, the driver and every process under it
(Ray's gcs_server, raylet, dashboard and agents, and the WorkerDict worker, which raylet starts): resident
memory (RSS), open file descriptors and threads per process, the number of processes, and the size of
output_dir and of the Ray session's logs folder. Warm-up is the first 100 steps. Holds if the summed RSS at
the end (mean of the samples in the last 100 steps) is less than 5% above its value after warm-up (mean of
steps 100-200), the process count and summed fds end where they were after warm-up, output_dir never holds
more than keep_last_n checkpoints (plus the one being written), and no process of the run outlives it.

    python bench/soak.py [--steps 1000] [--every 1]   # about 5 minutes on 2 CPU cores

Writes bench/results/<today>_reliability/soak.json (summary and downsampled samples) and soak.png; prints a table;
exits 1 if anything did not hold.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / f"{date.today()}_reliability"
KEEP_LAST_N, WARMUP, WINDOW, MAX_GROWTH = 2, 100, 100, 0.05
RUN = ["model_path=embedded:tiny", "batch_size=4", "n_generations=4", "val_size=8", "inference.max_response_length=8",
       "save_every=10", f"keep_last_n={KEEP_LAST_N}", "val_every=100"]


def label(process: psutil.Process, driver_pid: int) -> str:
    """driver, gcs_server, raylet, ray::WorkerDict, dashboard, ... (a worker's title changes with its task)."""
    return "driver" if process.pid == driver_pid else process_name(process)


def process_name(process: psutil.Process) -> str:
    """A process's short name: its Ray title (ray::WorkerDict), its Python script's name, or its executable."""
    cmdline = process.cmdline()
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split(".")[0]
    scripts = [Path(arg).stem for arg in cmdline if arg.endswith(".py")]
    return scripts[0] if scripts else process.name()


def sample(driver: psutil.Process, out: Path, ray_logs: Path | None) -> dict:
    """One snapshot of the run: per process RSS (MB), fds, threads; sizes on disk (MB); the step reached."""
    processes = {}
    for process in [driver, *driver.children(recursive=True)]:
        try:
            with process.oneshot():
                processes[process.pid] = {"label": label(process, driver.pid), "rss_mb": process.memory_info().rss / 2**20,
                                          "fds": process.num_fds(), "threads": process.num_threads()}
        except psutil.NoSuchProcess:
            continue
    return {"t": time.monotonic(), "step": last_step(out), "processes": processes, "run_dir_mb": folder_mb(out),
            "checkpoints_mb": folder_mb(out / "checkpoints"), "checkpoints": len(list(out.glob("checkpoints/*global_step_*"))),
            "ray_logs_mb": folder_mb(ray_logs) if ray_logs else None}


def last_step(out: Path) -> int:
    """The step of the last training row in metrics.jsonl (its tail is enough)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 20000))
        steps = re.findall(rb'\{"step": (\d+), "train/', f.read())
    return int(steps[-1]) if steps else 0


def folder_mb(folder: Path) -> float:
    size = 0
    for path in folder.rglob("*"):
        try:
            size += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:  # a checkpoint pruned while we walk
            continue
    return size / 2**20


def ray_logs(driver: psutil.Process) -> Path | None:
    """This run's Ray log folder, from gcs_server's --log_dir (/tmp/ray/session_latest may be another run's)."""
    for process in driver.children(recursive=True):
        try:
            logs = [arg.split("=", 1)[1] for arg in process.cmdline() if arg.startswith("--log_dir=")]
        except psutil.NoSuchProcess:
            continue
        if logs:
            return Path(logs[0])
    return None


def soak(out: Path, steps: int, every: float) -> tuple[list[dict], dict, int]:
    """Run and sample until the run exits: the samples, every process seen (by pid), the exit code."""
    out.mkdir(parents=True)
    with open(out.parent / "stdout.txt", "w") as stdout, open(out.parent / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "algorithm.py", *RUN, f"steps_per_epoch={steps}", f"output_dir={out}"],
                                   cwd=ROOT, stdout=stdout, stderr=stderr, start_new_session=True)
    driver, logs, samples, seen = psutil.Process(process.pid), None, [], {}
    try:
        while process.poll() is None:
            logs = logs or ray_logs(driver)
            samples.append(sample(driver, out, logs))
            seen.update({child.pid: child for child in driver.children(recursive=True)})
            time.sleep(every)
    except psutil.NoSuchProcess:  # the driver exited between poll and sample
        pass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return samples, seen, process.wait()


def outliving(processes: dict, grace: float = 30.0) -> list[str]:
    """The run's processes still alive `grace` seconds after the driver exited (is_running checks the pid was
    not reused)."""
    deadline = time.monotonic() + grace
    while True:
        alive = [p for p in processes.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {p.name()}" for p in alive]
        time.sleep(1)


def totals(s: dict) -> dict:
    procs = s["processes"].values()
    return {"rss_mb": sum(p["rss_mb"] for p in procs), "fds": sum(p["fds"] for p in procs),
            "threads": sum(p["threads"] for p in procs), "processes": len(s["processes"])}


def by_label(s: dict, field: str = "rss_mb") -> dict:
    """The field summed over the processes of each label."""
    sums = {}
    for p in s["processes"].values():
        sums[p["label"]] = sums.get(p["label"], 0) + p[field]
    return sums


def window_mean(samples: list[dict], first: int, last: int, value) -> float:
    values = [value(s) for s in samples if first <= s["step"] < last]
    return sum(values) / len(values)


def summarize(samples: list[dict], steps: int) -> dict:
    """RSS, fds, threads and processes after warm-up and at the end (means over a 100-step window each)."""
    running = [s for s in samples if 0 < s["step"] < steps]
    warm, end = (WARMUP, WARMUP + WINDOW), (steps - WINDOW, steps)
    rows = {}
    for name in ("rss_mb", "fds", "threads", "processes"):
        rows[f"total {name}"] = [window_mean(running, *warm, lambda s: totals(s)[name]),
                                 window_mean(running, *end, lambda s: totals(s)[name])]
    for name in sorted(by_label(running[-1])):
        for field in ("rss_mb", "fds"):
            rows[f"{name} {field}"] = [window_mean(running, *w, lambda s: by_label(s, field).get(name, 0)) for w in (warm, end)]
    return {key: {"after_warmup": round(a, 1), "end": round(b, 1), "growth_pct": round(100 * (b - a) / a, 2) if a else None}
            for key, (a, b) in rows.items()}


def downsample(samples: list[dict], points: int = 60) -> list[dict]:
    stride = max(1, len(samples) // points)
    start = samples[0]["t"]
    return [{"t_s": round(s["t"] - start, 1), "step": s["step"], **{k: round(v, 1) for k, v in totals(s).items()},
             "rss_mb_by_process": {k: round(v, 1) for k, v in by_label(s).items()}, "run_dir_mb": round(s["run_dir_mb"], 2),
             "checkpoints_mb": round(s["checkpoints_mb"], 2), "checkpoints": s["checkpoints"], "ray_logs_mb": s["ray_logs_mb"] and round(s["ray_logs_mb"], 2)}
            for s in samples[::stride] + samples[-1:]]


def plot(points: list[dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = [p["t_s"] for p in points]
    for name in sorted({name for p in points for name in p["rss_mb_by_process"]}):
        axes[0].plot(t, [p["rss_mb_by_process"].get(name, 0) for p in points], label=name)
    axes[0].plot(t, [p["rss_mb"] for p in points], label="total", color="black")
    axes[0].set(title="resident memory (MB)")
    for name in ("fds", "threads", "processes"):
        axes[1].plot(t, [p[name] for p in points], label=name)
    axes[1].set(title="open fds, threads, processes (all summed)")
    for name in ("run_dir_mb", "checkpoints_mb", "ray_logs_mb"):
        axes[2].plot(t, [p[name] or 0 for p in points], label=name)
    axes[2].set(title="disk (MB)")
    for ax in axes:
        ax.set(xlabel=f"seconds ({points[-1]['step']} steps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check(summary: dict, samples: list[dict], leftover: list, exit_code: int) -> list[str]:
    problems = [] if exit_code == 0 else [f"the run exited with {exit_code}"]
    if summary["total rss_mb"]["growth_pct"] >= 100 * MAX_GROWTH:
        problems.append(f"summed RSS grew {summary['total rss_mb']['growth_pct']}% after warm-up")
    for name in ("fds", "processes"):
        if summary[f"total {name}"]["end"] > summary[f"total {name}"]["after_warmup"] + 0.5:
            problems.append(f"{name} grew after warm-up: {summary[f'total {name}']}")
    if max(s["checkpoints"] for s in samples) > KEEP_LAST_N + 1:
        problems.append(f"up to {max(s['checkpoints'] for s in samples)} checkpoint folders at once")
    if leftover:
        problems.append(f"{len(leftover)} processes outlived the run: {leftover}")
    return problems


def print_table(summary: dict, points: list[dict]):
    print(f"{'':<28} {'after warm-up':>13} {'end':>9} {'growth %':>9}")
    for key, row in summary.items():
        print(f"{key:<28} {row['after_warmup']:>13} {row['end']:>9} {str(row['growth_pct']):>9}")
    print(f"\n{'t s':>6} {'step':>5} {'RSS MB':>7} {'fds':>5} {'thr':>5} {'procs':>5} {'run dir MB':>10} "
          f"{'ckpts (MB)':>11} {'ray logs MB':>11}")
    for p in points[:: max(1, len(points) // 12)] + points[-1:]:
        print(f"{p['t_s']:>6} {p['step']:>5} {p['rss_mb']:>7} {p['fds']:>5} {p['threads']:>5} {p['processes']:>5} "
              f"{p['run_dir_mb']:>10} {p['checkpoints']:>3} ({p['checkpoints_mb']:>5}) {str(p['ray_logs_mb']):>11}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--work", type=Path, default=Path("/tmp/soak"))
    opts = parser.parse_args()
    shutil.rmtree(opts.work, ignore_errors=True)
    start = time.monotonic()
    samples, seen, exit_code = soak(opts.work / "run", opts.steps, opts.every)
    wall = time.monotonic() - start
    leftover = outliving(seen)

    summary, points = summarize(samples, opts.steps), downsample(samples)
    problems = check(summary, samples, leftover, exit_code)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({
        "command": f"python algorithm.py {' '.join(RUN)} steps_per_epoch={opts.steps} output_dir=...",
        "wall_s": round(wall, 1), "samples": len(samples), "sample_every_s": opts.every,
        "warmup_steps": WARMUP, "window_steps": WINDOW, "summary": summary,
        "max_checkpoint_folders": max(s["checkpoints"] for s in samples), "processes_left_after_exit": leftover,
        "problems": problems, "points": points}, indent=1) + "\n")
    plot(points, RESULTS / "soak.png")
    print_table(summary, points)
    print(f"\n{opts.steps} steps in {wall:.0f} s, {len(samples)} samples")
    print("\n".join(f"DID NOT HOLD: {p}" for p in problems) or "all held")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
