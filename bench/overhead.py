"""Where the driver's time in a train step goes: python bench/overhead.py [key=value ...] (algorithm.py's keys).

Runs algorithm.main(overrides) in this process, from the repository root (relative paths start there), with
every train_step under its own cProfile, and splits the step (mean of steps 2..end; step 1 warms up) into:
waiting on the Ray workers (ray.get: generation, log-probs and updates run there), submitting their tasks (Ray
serialises the batch), the reward path (kit.data.rewards.RewardScorer.score, episode_scores), verl's driver-side
functions (compute_advantage, compute_data_metrics, compute_rollout_correction_and_add_to_batch,
apply_kl_penalty), and the rest: the kit's own Python with verl's DataProto and worker-group plumbing.
Profiling inflates Python time, so that share is an upper bound. Prints seconds per step, % of the step and
the functions with the most own time; writes output_dir/overhead.json.
  python bench/overhead.py model_path=embedded:tiny steps_per_epoch=2 val_size=8 save_every=0 output_dir=/tmp/ovh
"""

import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)  # algorithm.py reads config.yaml, env.py, my_reward.py from the repository root
sys.path.insert(0, str(ROOT))
import algorithm  # noqa: E402
from kit.setup.config import load_config  # noqa: E402

PARTS = {  # (file ending, function name) whose cumulative time makes each part
    "waiting on Ray workers (ray.get)": [("ray/_private/worker.py", "get")],
    "submitting Ray tasks (serialising args)": [("ray/actor.py", "_actor_method_call")],
    "reward function path": [("kit/data/rewards.py", "score"), ("kit/data/rewards.py", "episode_scores")],
    "verl driver-side functions": [
        ("verl/trainer/ppo/ray_trainer.py", "compute_advantage"),
        ("verl/trainer/ppo/ray_trainer.py", "apply_kl_penalty"),
        ("verl/trainer/ppo/metric_utils.py", "compute_data_metrics"),
        ("verl/trainer/ppo/rollout_corr_helper.py", "compute_rollout_correction_and_add_to_batch")],
}


def profiled(train_step, steps: list):
    """train_step, appending each call's wall time and cProfile.Profile to `steps`."""
    def step(*args, **kwargs):
        profile, start = cProfile.Profile(), time.perf_counter()
        try:
            return profile.runcall(train_step, *args, **kwargs)
        finally:
            steps.append((time.perf_counter() - start, profile))
    return step


def breakdown(wall: float, stats: pstats.Stats) -> dict:
    """Seconds of one step in each part; the rest is the kit's own."""
    seconds = {part: sum(ct for (file, _, name), (_, _, _, ct, _) in stats.stats.items()
                         if any(file.endswith(f) and name == n for f, n in functions))
               for part, functions in PARTS.items()}
    return {"train step": wall, **seconds, "kit's own (the rest)": wall - sum(seconds.values())}


def top_own_time(stats: pstats.Stats, n: int = 12) -> list[tuple[str, float]]:
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:n]
    return [(name if file == "~" else f"{Path(file).parent.name}/{Path(file).name}:{line} {name}", tt)
            for (file, line, name), (_, _, tt, _, _) in rows]


def main(overrides: list[str]):
    steps = []
    algorithm.train_step = profiled(algorithm.train_step, steps)  # main() looks train_step up when it calls it
    algorithm.main(overrides)
    measured = steps[1:] or steps
    parts = [breakdown(wall, pstats.Stats(profile)) for wall, profile in measured]
    mean = {part: sum(p[part] for p in parts) / len(parts) for part in parts[0]}
    top = [(name, tt / len(measured)) for name, tt in top_own_time(pstats.Stats(*(p for _, p in measured)))]

    first, last = len(steps) - len(measured) + 1, len(steps)
    print(f"\ntrain step, mean of steps {first}-{last} under cProfile (which inflates Python time: the kit's share is an "
          "upper bound)")
    for part, seconds in mean.items():
        print(f"  {part:<40} {seconds:8.3f} s/step  {100 * seconds / mean['train step']:5.1f} %")
    print("most own time per step (tottime):")
    for name, seconds in top:
        print(f"  {seconds:8.3f} s  {name}")
    out = Path(load_config("config.yaml", overrides).output_dir) / "overhead.json"
    out.write_text(json.dumps({"steps": [first, last], "seconds_per_step": mean, "per_step": parts,
                               "top_own_time_per_step": top}, indent=1))
    print(f"written: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
