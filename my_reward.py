"""my_reward.py: the reward function, with verl's signature (verl.utils.reward_score uses the same).

The model answers after "=" and, being a base-style continuation, often goes on with another example
("132\n45 + 17 = ..."). So the FIRST integer of the response is its answer; grading the last one would
reward whatever the model rambles on to.
"""

import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """1.0 when the first integer in the response equals the ground truth, else 0.0."""
    match = re.search(r"-?\d+", solution_str.replace(",", ""))
    return 1.0 if match is not None and match.group() == str(ground_truth).strip() else 0.0
