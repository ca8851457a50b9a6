"""Reward for the tool-use task: 1.0 when the last 'Answer: N' in the episode is the product, else 0.0."""

import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    answers = re.findall(r"Answer:\s*(-?\d+)", solution_str)
    return 1.0 if answers and answers[-1] == str(ground_truth) else 0.0
