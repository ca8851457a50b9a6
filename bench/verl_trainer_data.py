"""verl-format parquet files of bench/throughput_task.py's questions (or TASK's: bench/long_tail_task.py), for verl's
own trainer (bench/verl_trainer.sh).

  python bench/verl_trainer_data.py OUT_DIR N   # OUT_DIR/train.parquet (N rows), OUT_DIR/val.parquet (64 rows)

Rows are get_batch(64)'s in the order the kit's run draws them (64 a step from random.Random(0)), so with
data.shuffle=False verl's trainer asks the same questions step by step (N = 320: 5 steps of 64 prompts). Columns
as verl's RLHFDataset reads them: data_source, prompt (the chat messages), ability, reward_model {style: rule,
ground_truth}, extra_info {split, index}; my_reward.py scores them. The val file (the 64 questions after the
train rows) is only there because verl builds a val dataloader; the benchmark never validates.
"""

import importlib
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for the task files
task = importlib.import_module(Path(os.environ.get("TASK", "bench/throughput_task.py")).stem)

STEP = 64  # the kit's batch_size in its throughput runs (bench/catalogue.py)


def rows(count: int, split: str) -> list[dict]:
    out = []
    while len(out) < count:
        batch = task.get_batch(STEP)
        for messages, truth in zip(batch["prompts"], batch["ground_truths"]):
            out.append({"data_source": task.DATA_SOURCE, "prompt": messages, "ability": "math",
                        "reward_model": {"style": "rule", "ground_truth": truth},
                        "extra_info": {"split": split, "index": len(out)}})
    return out[:count]


def main(out_dir: Path, count: int):
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = rows(count, "train"), rows(STEP, "val")  # val: drawn after the train rows
    pd.DataFrame(train).to_parquet(out_dir / "train.parquet")
    pd.DataFrame(val).to_parquet(out_dir / "val.parquet")
    print(f"{len(train)} train and {len(val)} val rows in {out_dir}; first: {train[0]['prompt'][0]['content']!r} "
          f"-> {train[0]['reward_model']['ground_truth']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5 * STEP)
