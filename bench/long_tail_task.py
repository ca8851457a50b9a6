"""A kit task for the long-rollout benchmarks (bench/catalogue.py, the -tail shapes): chat prompts of about 100
tokens asking for a long story, the same 64 a step for every engine and peer (random.Random(0)). The random -tail
models (bench/random_model.py) end their responses at long-tailed lengths whatever the prompt says; a real model
(SmolLM2-135M-Instruct) writes long free answers to them. Scored by my_reward.py like the throughput task (it finds
no number: every reward 0, which costs the update nothing). Use: python algorithm.py env=bench/long_tail_task.py ...
"""

import random

DATA_SOURCE = "long_tail_story"
SUBJECTS = ("a lighthouse keeper", "a city under the sea", "the last train of the night", "a clockmaker's apprentice",
            "a village that forgot its name", "two rival bakers", "a comet seen once a century", "a lost letter",
            "an old map with a missing corner", "a robot learning to garden", "a river that flows uphill",
            "a library that opens at midnight")
DETAILS = ("Describe the place in detail: its sounds, its smells and the weather.",
           "Give every character a name, a habit and a secret.",
           "Tell it in the first person, looking back many years later.",
           "Let the story span several seasons, with one chapter for each.",
           "Include a conversation in which someone changes their mind.",
           "End with a surprise that the beginning quietly hinted at.",
           "Explain how each event leads to the next one.",
           "Describe at least one journey, step by step, with what goes wrong on the way.")
_rng = random.Random(0)


def get_batch(size):
    prompts = []
    for _ in range(size):
        details = " ".join(_rng.sample(DETAILS, 4))
        request = (f"Write a long story, at least two thousand words, about {_rng.choice(SUBJECTS)}. {details} "
                   "Take your time and do not summarise.")
        prompts.append([{"role": "user", "content": request}])
    return {"prompts": prompts, "ground_truths": ["none"] * size}


def state_dict():
    return {"rng": _rng.getstate()}


def load_state_dict(state):
    _rng.setstate(state["rng"])
