"""Checks that run before any worker starts, so a mistake costs seconds and reads as one line."""

import importlib.util
import os
from pathlib import Path

import torch
from verl.trainer.ppo import core_algos
from verl.utils.tracking import Tracking
from verl.workers.rollout.replica import get_rollout_replica_class

from kit.errors import KitError

ENGINES = ("hf", "vllm", "sglang")
INSTALL = {
    "vllm": "pip install -e '.[vllm]' (the version verl 0.9.1 pins), or use inference.engine=hf",
    "sglang": "pip install -e '.[sglang]' (sglang 0.5.14 with transformers 5.8.1, in an environment of its own), "
              "or use inference.engine=hf",
}



def check_engine(cfg):
    """Fail before any worker starts if the configured engine cannot run."""
    engine = cfg.inference.engine
    if engine not in ENGINES:
        raise KitError(f"inference.engine '{engine}' is unknown: choose one of {', '.join(ENGINES)}")
    if engine == "hf":
        return
    if importlib.util.find_spec(engine) is None:
        raise KitError(f"inference.engine '{engine}' needs {engine}, which is not installed: {INSTALL[engine]}")
    if cfg.num_gpus == 0 or torch.cuda.device_count() == 0:
        raise KitError(f"inference.engine '{engine}' runs on GPUs only and none is in use: use inference.engine=hf on the CPU")
    try:  # verl's server for the engine imports the engine's internals: a wrong version fails here
        get_rollout_replica_class(engine)
    except Exception as exc:
        raise KitError(f"inference.engine '{engine}': verl 0.9.1 could not load its {engine} server ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}): {INSTALL[engine]}") from None


def check_tensor_parallel(cfg, hf_config):
    """vllm/sglang give each GPU of a replica an equal share of the attention heads."""
    heads, size = hf_config.num_attention_heads, cfg.inference.tensor_parallel_size
    if cfg.inference.engine != "hf" and heads % size:
        fitting = ", ".join(str(d) for d in range(1, heads + 1) if heads % d == 0)
        raise KitError(f"inference.tensor_parallel_size={size} must divide the model's {heads} attention heads: "
                       f"use one of {fitting} (that divides the GPUs too), or more replicas of fewer GPUs")


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


def check_output_dir(cfg):
    """output_dir must be a folder this user can create and write, found before the workers start (not when the
    first metrics line or checkpoint is written)."""
    folder = Path(cfg.output_dir).expanduser().absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        what = "names a file" if existing == folder else f"lies under the file '{existing}'"
        raise KitError(f"config key 'output_dir' '{cfg.output_dir}' {what}: name a folder (it is made if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KitError(f"config key 'output_dir' '{cfg.output_dir}' cannot be written ('{existing}' is read-only to "
                       "this user): name a folder you can write")


# verl's estimators that take each response's group (`index`: the other responses to its prompt) for their baseline.
GROUP_ESTIMATORS = ("grpo", "grpo_vectorized", "grpo_passk", "gdpo", "rloo", "rloo_vectorized", "opo", "gpg",
                    "reinforce_plus_plus_baseline", "optimal_token_baseline", "tir_optimal_token_baseline")


def check_group_size(cfg):
    """A group estimator's baseline comes from the other responses to the same prompt. With one response per prompt
    there is none: verl's grpo then trains on raw scores, rloo_vectorized on zeros, grpo_passk raises."""
    estimator = cfg.algorithm.advantage_estimator
    if estimator in GROUP_ESTIMATORS and cfg.n_generations < 2:
        raise KitError(f"algorithm.advantage_estimator '{estimator}' compares the responses to each prompt with each "
                       f"other, and n_generations={cfg.n_generations} gives it none to compare: set n_generations=2 or "
                       "more (8 by default), or an estimator without groups (gae, reinforce_plus_plus, remax)")
