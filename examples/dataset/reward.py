"""Reward for verl-format datasets: verl's rule-based scorer for the row's data_source (gsm8k, MATH, ...)."""

from verl.utils.reward_score import default_compute_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return default_compute_score(data_source, solution_str, ground_truth, extra_info)
