"""A curriculum: additions that grow from one digit to three as the model masters each level. After every
step the loop calls on_step(metrics); when training accuracy averages 0.8 over the last 5 steps the task
moves up a level (logged as curriculum/level). Validation is always the hardest level, the goal. The level
and its history are in state_dict, so a resumed run continues at the level it had reached. Rewards: the
default my_reward.py (the first integer of the response).
Run: python algorithm.py config=examples/curriculum/config.yaml
"""

import random

DATA_SOURCE = "addition_curriculum"
LEVELS = 3  # digits per number at the top level
PROMOTE_AT, WINDOW = 0.8, 5  # mean train accuracy over the last WINDOW steps that moves the task up

_rng = random.Random(0)
_level, _recent = 1, []


def get_batch(size):
    return _as_batch([_problem(_rng, _level) for _ in range(size)])


def get_val_batch(size):
    rng = random.Random(1234)
    return _as_batch([_problem(rng, LEVELS) for _ in range(size)])


def on_step(metrics):
    global _level, _recent
    _recent = (_recent + [metrics["train/accuracy"]])[-WINDOW:]
    if _level < LEVELS and len(_recent) == WINDOW and sum(_recent) / WINDOW >= PROMOTE_AT:
        _level, _recent = _level + 1, []
    return {"curriculum/level": _level}


def state_dict():
    return {"rng": _rng.getstate(), "level": _level, "recent": list(_recent)}


def load_state_dict(state):
    global _level, _recent
    _rng.setstate(state["rng"])
    _level, _recent = state["level"], list(state["recent"])


def _problem(rng, digits):
    low, high = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    return rng.randint(low, high), rng.randint(low, high)


def _as_batch(pairs):
    return {"prompts": [f"3 + 4 = 7\n12 + 30 = 42\n{a} + {b} =" for a, b in pairs],
            "ground_truths": [str(a + b) for a, b in pairs]}
