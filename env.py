"""env.py: the task. Edit this file (and my_reward.py) for a new one.

The default task: two-digit additions that carry (47 + 38), asked as raw text after three worked
examples. SmolLM2-135M-Instruct gets about one in five right greedily, and about half of its 8-sample
groups mix right and wrong answers: the group-relative signal GRPO learns from. The held-out split is a
fixed tenth of the problems, never seen in training; the hash that picks it depends only on the ones
digits, so training never sees those ones-column pairs at all (9+3, 5+5, 8+6, 4+8, 7+9): held-out accuracy
measures carrying learned in general, not problems memorised.

Interface the loop uses:
  get_batch(size)      -> {'prompts': [...], 'ground_truths': [...]}   training problems
  get_val_batch(size)  -> the same, held out; always the same problems for the same size (optional)
  DATA_SOURCE          -> the name the reward function receives as data_source
  state_dict(), load_state_dict(state)  -> the data cursor, saved in checkpoints so a resumed run
                          continues the same order (optional)
  on_step(metrics)     -> called after every step with its metrics; what it returns is logged (optional)
A prompt is a string (raw text) or a list of chat messages [{'role': 'user', 'content': ...}]. A batch may
also carry per-prompt 'data_sources' and 'extra_infos' lists (examples/dataset reads verl's parquet files).
Instead of get_batch, a task file can define an Environment class with reset(seed) and step(action) for
multi-turn episodes (examples/text_game/env.py).
"""

import random

DATA_SOURCE = "carry_addition"
EXAMPLES = "12 + 35 = 47\n68 + 21 = 89\n45 + 39 = 84\n"  # the three worked examples before every question

# All pairs of two-digit numbers whose ones digits carry; a tenth (by a hash of the ones digits) is held out.
PROBLEMS = [(a, b) for a in range(10, 100) for b in range(10, 100) if a % 10 + b % 10 >= 10]
HELD_OUT = [(a, b) for a, b in PROBLEMS if (31 * a + 7 * b) % 10 == 0]
TRAIN = [(a, b) for a, b in PROBLEMS if (31 * a + 7 * b) % 10 != 0]

_rng = random.Random(0)  # training order: reproducible across runs


def get_batch(size):
    return _as_batch(_rng.choice(TRAIN) for _ in range(size))


def state_dict():
    return {"rng": _rng.getstate()}


def load_state_dict(state):
    _rng.setstate(state["rng"])


def get_val_batch(size):
    return _as_batch(random.Random(1234).sample(HELD_OUT, min(size, len(HELD_OUT))))


def _as_batch(pairs):
    pairs = list(pairs)
    return {"prompts": [f"{EXAMPLES}{a} + {b} =" for a, b in pairs], "ground_truths": [str(a + b) for a, b in pairs]}
