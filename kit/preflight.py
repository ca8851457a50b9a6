"""Checks that run before any worker starts, so a mistake costs seconds and reads as one line."""

import importlib.util

from verl.trainer.ppo import core_algos

from kit.errors import KitError

# Estimators that need more than rewards and group ids: a critic's values (gae), greedy baseline rollouts
# (remax), per-token sum of squared probabilities (optimal_token_baseline) or per-dimension rewards (gdpo).
NOT_YET = {"gae": "a critic", "remax": "greedy baseline rollouts", "optimal_token_baseline": "sum_pi_squared",
           "tir_optimal_token_baseline": "sum_pi_squared", "gdpo": "per-dimension rewards"}


def check_no_trl():
    """verl 0.9.1 imports AutoModelForCausalLMWithValueHead from trl whenever trl is importable; trl 1.x
    removed it, so building any worker fails deep inside verl."""
    if importlib.util.find_spec("trl") is not None:
        raise KitError("trl is installed beside verl 0.9.1, which breaks verl's workers: "
                       "pip uninstall trl (or run TRL from a separate environment)")


def check_algorithm(cfg):
    estimator, loss = cfg.algorithm.advantage_estimator, cfg.algorithm.policy_loss
    if estimator not in core_algos.ADV_ESTIMATOR_REGISTRY:
        valid = ", ".join(k for k in core_algos.ADV_ESTIMATOR_REGISTRY if k not in NOT_YET)
        raise KitError(f"algorithm.advantage_estimator '{estimator}' is unknown: choose one of {valid}")
    if estimator in NOT_YET:
        raise KitError(f"algorithm.advantage_estimator '{estimator}' needs {NOT_YET[estimator]}, which this version "
                       "of the kit does not provide yet: use grpo, rloo or reinforce_plus_plus")
    if loss not in core_algos.POLICY_LOSS_REGISTRY:
        valid = ", ".join(core_algos.POLICY_LOSS_REGISTRY)
        raise KitError(f"algorithm.policy_loss '{loss}' is unknown: choose one of {valid}")
