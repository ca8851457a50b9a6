"""Checks that run before any worker starts, so a mistake costs seconds and reads as one line."""

import importlib.util

from verl.trainer.ppo import core_algos
from verl.utils.tracking import Tracking

from kit.errors import KitError


def check_no_trl():
    """verl 0.9.1 imports AutoModelForCausalLMWithValueHead from trl whenever trl is importable; trl 1.x
    removed it, so building any worker fails deep inside verl."""
    if importlib.util.find_spec("trl") is not None:
        raise KitError("trl is installed beside verl 0.9.1, which breaks verl's workers: "
                       "pip uninstall trl (or run TRL from a separate environment)")


def check_algorithm(cfg):
    """Estimator and policy loss names that verl registers, and the keys the chosen ones need."""
    estimator, loss, algo = cfg.algorithm.advantage_estimator, cfg.algorithm.policy_loss, cfg.algorithm
    if estimator not in core_algos.ADV_ESTIMATOR_REGISTRY:
        valid = ", ".join(core_algos.ADV_ESTIMATOR_REGISTRY)
        raise KitError(f"algorithm.advantage_estimator '{estimator}' is unknown: choose one of {valid}")
    if loss not in core_algos.POLICY_LOSS_REGISTRY:
        valid = ", ".join(core_algos.POLICY_LOSS_REGISTRY)
        raise KitError(f"algorithm.policy_loss '{loss}' is unknown: choose one of {valid}")
    if estimator == "gae" and "critic" not in cfg.training:
        raise KitError("algorithm.advantage_estimator 'gae' trains a critic, but config.yaml has no training.critic "
                       "section: add one (model_path, strategy, lr, warmup_steps, cliprange_value)")
    if loss == "dro" and not (algo.dro_beta or 0) > 0:
        raise KitError("algorithm.policy_loss 'dro' needs algorithm.dro_beta > 0 (the weight of its log-ratio "
                       "penalty): set e.g. algorithm.dro_beta=0.1")
    if estimator == "gdpo" and not algo.gdpo_reward_keys:
        raise KitError("algorithm.advantage_estimator 'gdpo' needs algorithm.gdpo_reward_keys: list the keys of the "
                       "dict your reward function returns, e.g. algorithm.gdpo_reward_keys=[format,correct]")
    weights = algo.gdpo_reward_weights
    if estimator == "gdpo" and weights is not None and len(weights) != len(algo.gdpo_reward_keys):
        raise KitError(f"algorithm.gdpo_reward_weights has {len(weights)} weights for "
                       f"{len(algo.gdpo_reward_keys)} gdpo_reward_keys: give one weight per key")
    if algo.kl_ctrl.type not in ("fixed", "adaptive"):
        raise KitError(f"algorithm.kl_ctrl.type '{algo.kl_ctrl.type}' is unknown: choose fixed or adaptive")


# The package each of verl's tracking backends imports (console, file and rl_insight need none).
LOGGER_PACKAGES = {"wandb": "wandb", "vemlp_wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow",
                   "swanlab": "swanlab", "clearml": "clearml", "trackio": "trackio"}


def check_loggers(cfg):
    for name in cfg.logger:
        if name not in Tracking.supported_backend:
            raise KitError(f"logger '{name}' is unknown: choose from {', '.join(Tracking.supported_backend)}")
        package = LOGGER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise KitError(f"logger '{name}' needs the {package} package: pip install -e '.[tracking]' "
                           f"(or pip install {package}), or drop it from logger")
