"""A kit task for throughput benchmarks (bench/catalogue.py): 2-digit additions asked as chat messages,
"What is {a} + {b}? Answer with the number only.", ground truth str(a + b), scored by my_reward.py (the
first integer of the reply); bench/trl_bench.py should ask TRL the same questions. No get_val_batch:
validation is skipped. Use: python algorithm.py env=bench/throughput_task.py ...
"""

import random

DATA_SOURCE = "throughput_addition"
_rng = random.Random(0)


def get_batch(size):
    pairs = [(_rng.randint(10, 99), _rng.randint(10, 99)) for _ in range(size)]
    questions = [f"What is {a} + {b}? Answer with the number only." for a, b in pairs]
    return {"prompts": [[{"role": "user", "content": question}] for question in questions],
            "ground_truths": [str(a + b) for a, b in pairs]}


def state_dict():
    return {"rng": _rng.getstate()}


def load_state_dict(state):
    _rng.setstate(state["rng"])
