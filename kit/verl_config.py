"""Translate the kit's config.yaml into verl 0.9.1's own trainer config (verl/trainer/config/ppo_trainer.yaml).

verl's workers, reward manager and estimators read that Hydra config; the kit composes it from the
installed package and sets the few fields its short config names, so every other verl default holds.
"""

from pathlib import Path

import verl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

VERL_CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")


def compose_verl_config(overrides: dict) -> DictConfig:
    """verl's ppo_trainer config with `overrides` ({dotted.key: value}) applied."""
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        cfg = compose(config_name="ppo_trainer")
    with open_dict(cfg):
        for key, value in overrides.items():
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def verl_overrides(cfg: DictConfig, model_dir: str, on_gpu: bool) -> dict:
    """The verl config fields that follow from the kit's config."""
    actor, critic = cfg.training.actor, cfg.training.critic
    micro = actor.batch_size_per_gpu
    # FSDP mixed precision: verl's bf16 default on GPUs; on a CPU bf16 matmuls are slow and gain nothing.
    precision = None if on_gpu else {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
    return {
        "trainer.device": "cuda" if on_gpu else "cpu",
        "actor_rollout_ref.model.path": model_dir,
        # flash-attention is not installed by default; sdpa runs everywhere.
        "actor_rollout_ref.model.override_config": {"attn_implementation": "sdpa"},
        "actor_rollout_ref.model.use_remove_padding": False,
        "actor_rollout_ref.model.enable_gradient_checkpointing": actor.gradient_checkpointing,
        "actor_rollout_ref.actor.strategy": actor.strategy,
        "actor_rollout_ref.actor.optim.lr": actor.lr,
        "actor_rollout_ref.actor.grad_clip": actor.grad_clip,
        "actor_rollout_ref.actor.ppo_mini_batch_size": cfg.batch_size,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": micro,
        "actor_rollout_ref.actor.use_kl_loss": actor.use_kl_loss,
        "actor_rollout_ref.actor.kl_loss_coef": actor.kl_loss_coef,
        "actor_rollout_ref.actor.kl_loss_type": actor.kl_loss_type,
        "actor_rollout_ref.actor.entropy_coeff": actor.entropy_coeff,
        "actor_rollout_ref.actor.clip_ratio": actor.clip_ratio,
        "actor_rollout_ref.actor.policy_loss.loss_mode": cfg.algorithm.policy_loss,
        "actor_rollout_ref.actor.use_torch_compile": on_gpu,
        "actor_rollout_ref.actor.fsdp_config.mixed_precision": precision,
        "actor_rollout_ref.actor.fsdp_config.seed": cfg.seed,
        "actor_rollout_ref.ref.fsdp_config.mixed_precision": precision,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": micro,
        # The kit's own hf engine generates inside the actor worker; verl only reads this name for
        # its server rollouts (vllm, sglang), which the kit does not start for the hf engine.
        "actor_rollout_ref.rollout.name": cfg.inference.engine,
        "actor_rollout_ref.rollout.n": cfg.n_generations,
        "actor_rollout_ref.rollout.temperature": cfg.inference.temperature,
        "actor_rollout_ref.rollout.top_p": cfg.inference.top_p,
        "actor_rollout_ref.rollout.response_length": cfg.inference.max_response_length,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": micro,
        "critic.strategy": critic.strategy,
        "critic.optim.lr": critic.lr,
        "algorithm.adv_estimator": cfg.algorithm.advantage_estimator,
        "algorithm.gamma": cfg.algorithm.gamma,
        "algorithm.lam": cfg.algorithm.lam,
        "algorithm.norm_adv_by_std_in_grpo": cfg.algorithm.norm_adv_by_std_in_grpo,
        "reward.custom_reward_function.path": str(Path(cfg.reward_model.custom_reward_function.path).resolve()),
        "reward.custom_reward_function.name": cfg.reward_model.custom_reward_function.name,
        "trainer.project_name": cfg.project_name,
        "trainer.experiment_name": cfg.experiment_name,
        "trainer.logger": list(cfg.logger),
    }
