"""A dataset task read from files in verl's format (parquet from verl's preprocessing scripts, or JSON lines):
every row's data_source, prompt, reward_model.ground_truth and extra_info reach the reward function, here
verl's own rule-based scorer for that data_source (reward.py). Point TRAIN_FILE / TEST_FILE at your own
files (e.g. ~/data/gsm8k/train.parquet from verl's examples/data_preprocess/gsm8k.py).
Make the shipped files once: python examples/dataset/make_data.py
Run: python algorithm.py config=examples/dataset/config.yaml
"""

import random
from pathlib import Path

from kit.data.datasets import VerlDataset

DATA = Path(__file__).parent / "data"
TRAIN = VerlDataset(DATA / "train.parquet")
TEST = VerlDataset(DATA / "test.parquet")

_rng = random.Random(0)


def get_batch(size):
    return TRAIN.batch(_rng.randrange(len(TRAIN)) for _ in range(size))


def get_val_batch(size):
    return TEST.batch(range(min(size, len(TEST))))


def state_dict():
    return {"rng": _rng.getstate()}


def load_state_dict(state):
    _rng.setstate(state["rng"])
