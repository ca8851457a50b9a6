"""Kill a short CPU run with SIGKILL at 20 random moments: every resume finishes, with an uninterrupted run's metrics.

Issue 8. The run is tests/test_resume.py's RUN (tiny model, adaptive KL, cosine LR, two optimizer steps per
step) with more steps and a checkpoint every step. It runs once uninterrupted, which gives the reference
metrics and a timeline (when each step's first row appeared). Then an output_dir is started again and again
with the same command (resume=auto), its process group killed with SIGKILL at a moment drawn uniformly
(seeded) over the time that attempt should take: the uninterrupted run's wall time less the steps its newest
checkpoint already holds. So kills land in start-up, generation, update, checkpoint writes and the export.
When an attempt ends before its moment (the run finished), that output_dir is compared and a new one
starts, until 20 kills have landed; the last one then runs to the end. Checked for each output_dir: the
final attempt finishes, the rows of metrics.jsonl (timings, perf and mfu left out, as tests/test_resume.py's
learning_metrics does) equal the uninterrupted run's one for one (no step logged twice), the exported weights
are the same bytes, metrics.png exists, and at most keep_last_n checkpoints and no scratch folder remain.
Recorded per kill: the last step logged, the checkpoints left, the step the restart resumed from, and the
killed run's processes still alive 10 and 60 s later (Ray's workers leave its process group).

    python bench/kill_resume.py [--kills 20] [--seed 0] [--steps 40]   # about 15 minutes on 2 CPU cores

Writes bench/results/<today>_reliability/kill_resume.json and prints a table; exits 1 if anything did not hold.
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import time
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from soak import process_name  # noqa: E402  (bench/, the script's own folder, is on the path)
from test_resume import RUN, learning_metrics, start_run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / f"{date.today()}_reliability" / "kill_resume.json"
KEEP_LAST_N = 2  # config.yaml's default, which RUN keeps


def run_straight(out: Path, args: list[str]) -> tuple[float, dict]:
    """The uninterrupted run: its wall time and when each step's first row appeared (step 0: start-up done)."""
    start, seen = time.monotonic(), {}
    process = start_run(out, *args)
    while process.poll() is None:
        for step in logged_steps(out):
            seen.setdefault(step, time.monotonic() - start)
        time.sleep(0.02)
    assert process.returncode == 0, (out / "stderr.txt").read_text()[-3000:]
    return time.monotonic() - start, seen


def logged_steps(out: Path) -> list[int]:
    """The step of every complete row of metrics.jsonl (a row cut short by a kill is left out)."""
    path = out / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [int(m) for m in re.findall(r'^\{"step": (\d+),.*\}$', text, flags=re.M)]


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.rsplit("_", 1)[1]) for p in (out / "checkpoints").glob("global_step_*"))


def expected_duration(total: float, seen: dict, out: Path) -> float:
    """The uninterrupted run's wall time less the steps the newest checkpoint already holds."""
    done = max(checkpoint_steps(out), default=0) if (out / "checkpoints").exists() else 0
    return total - (seen[done] - seen[0])


def attempt(out: Path, args: list[str], steps: int, kill_at: float | None) -> dict:
    """Start the run; kill its process group at kill_at seconds (unless it ended first). What happened."""
    start, started = time.monotonic(), time.time()
    process = start_run(out, *args)
    while process.poll() is None and (kill_at is None or time.monotonic() - start < kill_at):
        time.sleep(0.01)
    killed_at, survivors = None, {}
    if process.poll() is None:
        children = descendants(process.pid)
        killed_at = round(time.monotonic() - start, 2)
        os.killpg(process.pid, signal.SIGKILL)
        survivors = outliving(children)
    process.wait()
    stdout = (out / "stdout.txt").read_text()
    resumed = re.search(r"resumed from \S+ \(step (\d+)\)", stdout)
    return {"killed_at_s": killed_at, "phase": killed_at and phase(stdout, out, steps, since=started),
            "exit_code": process.returncode, "resumed_from": int(resumed.group(1)) if resumed else None,
            "last_step_logged": max(logged_steps(out), default=None),
            "checkpoints_after": checkpoint_steps(out) if (out / "checkpoints").exists() else [], **survivors,
            "finished": "done: Hugging Face model" in stdout or "this run already finished" in stdout,
            "stderr_tail": (out / "stderr.txt").read_text()[-300:]}


def phase(stdout: str, out: Path, steps: int, since: float) -> str:
    """Where the kill landed, seen from outside: start-up (the loop had not begun), training, or the end (export,
    plot, shutdown after the last step); "+ckpt" when it cut a checkpoint write (a scratch folder made since)."""
    if not re.search(r"resumed from|^step:0 - ", stdout, flags=re.M):
        where = "start-up"
    else:
        where = "end" if max(logged_steps(out), default=0) == steps else "training"
    cut = any(p.stat().st_mtime >= since for p in out.glob("checkpoints/.global_step_*.partial"))
    return where + ("+ckpt" if cut else "")


def descendants(pid: int) -> dict:
    """Every process under pid, with its short name (soak.process_name)."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child] = process_name(child)
        except psutil.NoSuchProcess:
            continue
    return found


def outliving(processes: dict) -> dict:
    """The killed run's processes still alive 10 s and 60 s on (Ray's workers leave its process group); killed then."""
    _, alive = psutil.wait_procs(list(processes), timeout=10)
    alive_10s = [processes[p] for p in alive]
    _, alive = psutil.wait_procs(alive, timeout=50)
    for process in alive:
        process.kill()
    return {"alive_10s_after": alive_10s, "alive_60s_after": [processes[p] for p in alive]}


def weights_digest(out: Path) -> str:
    return hashlib.sha256((out / "hf_model" / "model.safetensors").read_bytes()).hexdigest()


def compare(straight: Path, killed: Path) -> list[str]:
    """Everything that differs between the killed-and-resumed run and the uninterrupted one."""
    problems = []
    if logged_steps(killed) != logged_steps(straight):
        problems.append(f"rows by step differ: {logged_steps(killed)} against {logged_steps(straight)}")
    expected, got = learning_metrics(straight), learning_metrics(killed)
    differing = sorted({key for key in expected.keys() | got.keys() if expected.get(key) != got.get(key)})
    if differing:
        problems.append(f"{len(differing)} metrics differ, first: {differing[:5]}")
    if not (killed / "hf_model" / "model.safetensors").exists() or weights_digest(killed) != weights_digest(straight):
        problems.append("the exported weights differ from the uninterrupted run's (or are missing)")
    if not (killed / "metrics.png").exists():
        problems.append("no metrics.png")
    if len(checkpoint_steps(killed)) > KEEP_LAST_N or list(killed.glob("checkpoints/.*")):
        problems.append(f"checkpoints left: {sorted(p.name for p in (killed / 'checkpoints').iterdir())}")
    return problems


def kill_until_finished(out: Path, args: list[str], steps: int, draw: random.Random, kills_left: int, total: float,
                        seen: dict) -> tuple[list[dict], dict]:
    """Start the run in `out` again and again, each attempt killed at a random moment, until one ends before
    its moment (the run finished) or kills_left kills have landed; then once more without a kill."""
    kills = []
    while len(kills) < kills_left:
        expected = expected_duration(total, seen, out)
        row = {"drawn_of_s": round(expected, 1), **attempt(out, args, steps, kill_at=draw.uniform(0, expected))}
        if kills:
            kills[-1]["next_resumed_from"] = row["resumed_from"]
        if row["killed_at_s"] is None:
            return kills, row
        kills.append(row)
    final = attempt(out, args, steps, kill_at=None)
    kills[-1]["next_resumed_from"] = final["resumed_from"]
    return kills, final


def print_table(cycles: list[dict]):
    print(f"{'dir':>3} {'kill':>4} {'at s':>6} {'of s':>6} {'phase':>14} {'last step':>9} {'ckpts after':>12} "
          f"{'exit':>5} {'next resumed from':>17} {'alive 10 s / 60 s':>17}")
    for n, cycle in enumerate(cycles, 1):
        for i, row in enumerate(cycle["kills"], 1):
            alive = f"{len(row['alive_10s_after'])} / {len(row['alive_60s_after'])}"
            print(f"{n:>3} {i:>4} {row['killed_at_s']:>6} {row['drawn_of_s']:>6} {row['phase']:>14} "
                  f"{str(row['last_step_logged']):>9} {str(row['checkpoints_after']):>12} {row['exit_code']:>5} "
                  f"{str(row['next_resumed_from']):>17} {alive:>17}")
        final = cycle["final"]
        print(f"{n:>3} {'end':>4}: exit {final['exit_code']}, resumed from {final['resumed_from']}, "
              f"{'finished' if final['finished'] else 'NOT finished'}; {'; '.join(cycle['problems']) or 'same as uninterrupted'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kill_resume"))
    opts = parser.parse_args()
    args = [*(arg for arg in RUN if not arg.startswith("steps_per_epoch=")), f"steps_per_epoch={opts.steps}"]
    shutil.rmtree(opts.work, ignore_errors=True)
    straight = opts.work / "straight"
    total, seen = run_straight(straight, args)
    print(f"uninterrupted: {total:.1f} s, start-up (step-0 validation logged) {seen[0]:.1f} s, steps {opts.steps}")

    draw, cycles, landed = random.Random(opts.seed), [], 0
    while landed < opts.kills:
        out = opts.work / f"killed_{len(cycles) + 1}"
        kills, final = kill_until_finished(out, args, opts.steps, draw, opts.kills - landed, total, seen)
        problems = compare(straight, out)
        if not final["finished"] or final["exit_code"] != 0:
            problems.insert(0, f"the final attempt did not finish (exit {final['exit_code']}): {final['stderr_tail']}")
        for row in [*kills, final]:
            row.pop("stderr_tail")
        cycles.append({"output_dir": str(out), "kills": kills, "final": final, "problems": problems})
        landed += len(kills)
    print_table(cycles)

    problems = [f"{cycle['output_dir']}: {p}" for cycle in cycles for p in cycle["problems"]]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": f"python algorithm.py {' '.join(args)} output_dir=...", "seed": opts.seed,
        "uninterrupted_s": round(total, 1), "startup_s": round(seen[0], 1), "kills_landed": landed,
        "output_dirs": len(cycles), "rows_compared_each": len(logged_steps(straight)),
        "metrics_compared_each": len(learning_metrics(straight)), "cycles": cycles, "problems": problems}, indent=1) + "\n")
    print(f"{landed} kills in {len(cycles)} output_dirs; {len(logged_steps(straight))} rows and "
          f"{len(learning_metrics(straight))} metrics compared per output_dir")
    print("\n".join(f"MISMATCH: {p}" for p in problems) or "all held: every resume finished with the same metrics")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
