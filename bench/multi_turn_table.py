"""Before/after table for multi-turn runs: greedy held-out figures at each validation, and sampled training
figures averaged over the first and last 10 steps. Use: python bench/multi_turn_table.py RUN/metrics.jsonl ..."""

import sys

import pandas

TRAIN = ["train/reward_mean", "train/accuracy", "episode/well_formed_call_share", "episode/tool_errors", "episode/turns"]
VAL = ["val/accuracy", "val/reward_mean", "val/episode/well_formed_call_share", "val/episode/turns"]


def table(path: str):
    history = pandas.read_json(path, lines=True)
    train = history[history["train/reward_mean"].notna()]
    val = history[history["val/accuracy"].notna()]
    print(f"== {path}: {len(train)} steps")
    print(val[["step"] + [c for c in VAL if c in val]].round(3).to_string(index=False))
    columns = [c for c in TRAIN if c in train]
    first, last = train.head(10), train.tail(10)
    print(f"steps {first.step.min()}-{first.step.max()}:", first[columns].mean().round(3).to_dict())
    print(f"steps {last.step.min()}-{last.step.max()}:", last[columns].mean().round(3).to_dict())
    step_time = train[[c for c in train if c.startswith("timing/")]].sum(axis=1)
    print(f"time per step {step_time.iloc[5:].mean():.1f} s (mean after step 5)")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        table(path)
