"""A tool-use task: multiply two 3-digit numbers, which SmolLM2-135M cannot do in its head but can with the
calculator of tools.yaml. One worked exchange shows the call format (hermes); the reward (reward.py) is
the final 'Answer: N' being right. Run it: python algorithm.py config=examples/tool_use/config.yaml
"""

import random

DATA_SOURCE = "multiply_with_calculator"
SYSTEM = ("You are a careful assistant with a calculator. To use it, reply with exactly "
          '<tool_call>{"name": "calculator", "arguments": {"expression": "A * B"}}</tool_call> and wait for the '
          "result. Then reply with Answer: followed by the number.")
DEMONSTRATION = [
    {"role": "user", "content": "What is 123 * 456?"},
    {"role": "assistant", "content": '<tool_call>{"name": "calculator", "arguments": {"expression": "123 * 456"}}</tool_call>'},
    {"role": "tool", "content": "56088"},
    {"role": "assistant", "content": "Answer: 56088"},
]
PAIRS = [(a, b) for a in range(100, 1000, 7) for b in range(100, 1000, 11)]
HELD_OUT = PAIRS[::10]  # a tenth of the pairs, never trained on
TRAIN = [pair for i, pair in enumerate(PAIRS) if i % 10]

_rng = random.Random(0)


def get_batch(size):
    return _as_batch(_rng.choice(TRAIN) for _ in range(size))


def get_val_batch(size):
    return _as_batch(random.Random(1234).sample(HELD_OUT, min(size, len(HELD_OUT))))


def state_dict():
    return {"rng": _rng.getstate()}


def load_state_dict(state):
    _rng.setstate(state["rng"])


def _as_batch(pairs):
    pairs = list(pairs)
    prompts = [[{"role": "system", "content": SYSTEM}, *DEMONSTRATION, {"role": "user", "content": f"What is {a} * {b}?"}]
               for a, b in pairs]
    return {"prompts": prompts, "ground_truths": [str(a * b) for a, b in pairs]}
