"""Translate the kit's config.yaml into verl 0.9.1's own trainer config (verl/trainer/config/ppo_trainer.yaml).

verl's workers, reward manager and estimators read that Hydra config; the kit composes it from the
installed package and sets the few fields its short config names, so every other verl default holds.
"""

from pathlib import Path

import verl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from kit.patches.on_policy import SUM_PI_SQUARED_ESTIMATORS
from kit.rollout.server_engine import AGENT_LOOP, AGENT_LOOP_CONFIG

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
    actor, critic, algo = cfg.training.actor, cfg.training.critic, cfg.algorithm
    tokens = actor.max_tokens_per_gpu  # micro-batches by token count (verl's dynamic batch size)
    # FSDP mixed precision: verl's bf16 default on GPUs; on a CPU bf16 matmuls are slow and gain nothing.
    precision = None if on_gpu else {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
    model = {
        "path": model_dir,
        # flash-attention is not installed by default; sdpa runs everywhere.
        "override_config": {"attn_implementation": "sdpa"},
        "use_remove_padding": False,
        "enable_gradient_checkpointing": actor.gradient_checkpointing,
    }
    lora = {  # verl's FSDP engine wraps the actor in peft adapters; vllm/sglang get the merged weights
        "lora_rank": actor.lora.rank, "lora_alpha": actor.lora.alpha, "target_modules": actor.lora.target_modules,
        "lora": {"merge": True},
    }
    # One worker holds the whole model anyway: keeping the gathered weights from the forward to the backward
    # saves FSDP's second gather per layer and micro-batch (one bf16 copy of the model in memory).
    reshard = cfg.num_workers > 1
    # One GPU: the whole model as one FSDP unit. Nothing is sharded anyway, and a unit per layer costs each layer
    # FSDP's hooks and a gradient reduce per micro-batch, host time that bounds small updates on a GPU; the price
    # is the whole model's gradients held until the backward ends.
    # verl's FSDP2 wrapping reads the layer class; its FSDP1 policy, built too, reads min_num_params first (it
    # would fail on a class it cannot find).
    # Not for LoRA with a server engine: verl merges the adapters for the servers' weight sync only inside per-layer
    # units (fsdp_merge_unmerge skips the root), so one unit sent vllm/sglang the base weights, never the adapted ones.
    servers_get_lora = actor.lora.rank > 0 and cfg.inference.engine != "hf"
    one_unit = (on_gpu and cfg.num_workers == 1 and actor.strategy == "fsdp2" and not actor.param_offload
                and not servers_get_lora)
    units = {"transformer_layer_cls_to_wrap": [NO_LAYER], "min_num_params": 2**62} if one_unit else {}
    # torch's fused AdamW on GPUs: one kernel per step instead of a dozen per parameter tensor.
    optimizer_options = {"fused": True} if on_gpu else None
    total_steps = cfg.num_epochs * cfg.steps_per_epoch
    mini_batch = actor.mini_batch_size or cfg.batch_size  # prompts per optimizer step
    optimizer_steps = total_steps * actor.ppo_epochs * (cfg.batch_size // mini_batch)
    return {
        "trainer.device": "cuda" if on_gpu else "cpu",
        **{f"actor_rollout_ref.model.{key}": value for key, value in (model | lora).items()},
        "actor_rollout_ref.model.use_fused_kernels": actor.fused_kernels != "none",
        "actor_rollout_ref.model.use_liger": actor.liger is True,  # resolve_hardware decides 'auto'
        "actor_rollout_ref.model.fused_kernel_options.impl_backend": None if actor.fused_kernels == "none" else actor.fused_kernels,
        "actor_rollout_ref.actor.strategy": actor.strategy,
        "actor_rollout_ref.actor.optim.lr": actor.lr,
        "actor_rollout_ref.actor.optim.lr_scheduler_type": actor.lr_schedule,
        "actor_rollout_ref.actor.optim.lr_warmup_steps": actor.lr_warmup_steps,
        "actor_rollout_ref.actor.optim.total_training_steps": optimizer_steps,
        "actor_rollout_ref.actor.optim.override_optimizer_config": optimizer_options,
        "actor_rollout_ref.actor.fsdp_config.reshard_after_forward": reshard,
        "actor_rollout_ref.actor.fsdp_config.wrap_policy": units,
        "actor_rollout_ref.ref.fsdp_config.wrap_policy": units,
        "actor_rollout_ref.actor.fsdp_config.param_offload": actor.param_offload,
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload": actor.optimizer_offload,
        "actor_rollout_ref.ref.fsdp_config.param_offload": actor.param_offload,
        "actor_rollout_ref.actor.grad_clip": actor.grad_clip,
        "actor_rollout_ref.actor.ppo_epochs": actor.ppo_epochs,
        "actor_rollout_ref.actor.ppo_mini_batch_size": mini_batch,
        "actor_rollout_ref.actor.use_dynamic_bsz": True,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": tokens,
        "actor_rollout_ref.actor.use_kl_loss": actor.use_kl_loss,
        "actor_rollout_ref.actor.kl_loss_coef": actor.kl_loss_coef,
        "actor_rollout_ref.actor.kl_loss_type": actor.kl_loss_type,
        "actor_rollout_ref.actor.entropy_coeff": actor.entropy_coeff,
        "actor_rollout_ref.actor.clip_ratio": actor.clip_ratio,
        "actor_rollout_ref.actor.clip_ratio_low": _default(actor.clip_ratio_low, actor.clip_ratio),
        "actor_rollout_ref.actor.clip_ratio_high": _default(actor.clip_ratio_high, actor.clip_ratio),
        "actor_rollout_ref.actor.clip_ratio_c": actor.clip_ratio_c,
        "actor_rollout_ref.actor.loss_agg_mode": actor.loss_agg_mode,
        "actor_rollout_ref.actor.calculate_sum_pi_squared": algo.advantage_estimator in SUM_PI_SQUARED_ESTIMATORS,
        "actor_rollout_ref.actor.policy_loss.loss_mode": algo.policy_loss,
        **{f"actor_rollout_ref.actor.policy_loss.{key}": algo[key] for key in POLICY_LOSS_KEYS},
        "actor_rollout_ref.actor.use_torch_compile": on_gpu,
        "actor_rollout_ref.actor.fsdp_config.mixed_precision": precision,
        "actor_rollout_ref.actor.fsdp_config.seed": cfg.seed,
        "actor_rollout_ref.ref.fsdp_config.mixed_precision": precision,
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz": True,
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu": tokens,
        **{f"actor_rollout_ref.rollout.{key}": value for key, value in rollout_overrides(cfg).items()},
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": True,
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": tokens,
        **{f"critic.model.{key}": value for key, value in model.items()},
        "critic.model.path": critic.model_path or model_dir,
        "critic.model.tokenizer_path": model_dir,
        "critic.strategy": critic.strategy,
        "critic.optim.lr": critic.lr,
        "critic.optim.override_optimizer_config": optimizer_options,
        "critic.fsdp.reshard_after_forward": reshard,
        "critic.fsdp.wrap_policy": units,
        "critic.ppo_epochs": actor.ppo_epochs,
        "critic.ppo_mini_batch_size": mini_batch,
        "critic.use_dynamic_bsz": True,
        "critic.ppo_max_token_len_per_gpu": tokens,
        "critic.forward_max_token_len_per_gpu": tokens,
        "critic.cliprange_value": critic.cliprange_value,
        "critic.fsdp.use_torch_compile": on_gpu,
        "critic.fsdp.mixed_precision": precision,
        "critic.fsdp.seed": cfg.seed,
        "algorithm.adv_estimator": algo.advantage_estimator,
        "algorithm.gamma": algo.gamma,
        "algorithm.lam": algo.lam,
        "algorithm.norm_adv_by_std_in_grpo": algo.norm_adv_by_std_in_grpo,
        "algorithm.use_kl_in_reward": algo.use_kl_in_reward,
        "algorithm.kl_penalty": algo.kl_penalty,
        **{f"algorithm.kl_ctrl.{key}": value for key, value in algo.kl_ctrl.items()},
        "algorithm.gdpo_reward_keys": algo.gdpo_reward_keys,
        "algorithm.gdpo_reward_weights": algo.gdpo_reward_weights,
        "algorithm.rollout_correction.rollout_is": algo.rollout_is,
        "algorithm.rollout_correction.rollout_is_threshold": algo.rollout_is_threshold,
        "reward.custom_reward_function.path": reward_function_path(cfg),
        "reward.custom_reward_function.name": cfg.reward.custom_reward_function.name,
        "trainer.project_name": cfg.project_name,
        "trainer.experiment_name": cfg.experiment_name,
        "trainer.logger": list(cfg.logger),
    }


def rollout_overrides(cfg: DictConfig) -> dict:
    """verl's rollout config. Only the vllm/sglang engines start verl's servers (kit/rollout/server_engine.py); the hf
    engine generates inside the actor workers and reads none of it."""
    inference = cfg.inference
    overrides = {
        "name": inference.engine,
        "n": cfg.n_generations,
        "temperature": inference.temperature,
        "top_p": inference.top_p,
        # The servers' context (max_model_len) is prompt_length + response_length: the model's own.
        "prompt_length": max(cfg.model_context - inference.max_response_length, 1),  # too long: inference.py says so
        "response_length": inference.max_response_length,
        "calculate_log_probs": inference.engine_log_probs,  # the engine's own: rollout_log_probs
        "gpu_memory_utilization": inference.gpu_memory_utilization,
        "tensor_model_parallel_size": inference.tensor_parallel_size,
        "max_num_batched_tokens": inference.max_num_batched_tokens,
        "free_cache_engine": inference.free_cache_engine,
        "dtype": inference.dtype,
        "enforce_eager": inference.enforce_eager,
        f"engine_kwargs.{inference.engine}": OmegaConf.to_container(inference.engine_kwargs),
        "agent.agent_loop_config_path": AGENT_LOOP_CONFIG,
        "agent.default_agent_loop": AGENT_LOOP,
    }
    if cfg.num_gpus:  # verl places one server replica per tensor_model_parallel_size GPUs of a node
        overrides["n_gpus_per_node"] = cfg.worker_layout[0]
        overrides["max_num_seqs"] = requests_per_replica(cfg)
    return overrides


def requests_per_replica(cfg: DictConfig) -> int:
    """How many requests each server replica runs at once: a step's rollouts spread over the replicas, so that all
    of them decode together, as in the hf engine. verl's default (256, its floor here) ran the 512 rollouts of a
    64 x 8 step on one GPU in two waves of 1,024 decode steps each, against one wave in the hf sampler."""
    replicas = max(cfg.num_gpus // cfg.inference.tensor_parallel_size, 1)
    return max(-(-cfg.batch_size * cfg.n_generations // replicas), VERL_MAX_NUM_SEQS)


def reward_function_path(cfg: DictConfig) -> str | None:
    """The reward file's absolute path; None (verl's own default_compute_score, which scores verl's datasets by
    their data_source) when verl's data files are the task and the reward is still the shipped my_reward.py."""
    path = cfg.reward.custom_reward_function.path
    if cfg.data.train_files and path == SHIPPED_REWARD:
        return None
    return str(Path(path).resolve())


VERL_MAX_NUM_SEQS = 256  # verl's rollout.max_num_seqs default (vLLM's max_num_seqs, SGLang's max_running_requests)
NO_LAYER = "NoLayer"  # a layer class name no model has: verl's FSDP2 wraps the root module alone
SHIPPED_REWARD = "my_reward.py"  # config.yaml's reward, written for env.py's default task
# Policy-loss keys of the kit's `algorithm` section that verl reads from actor.policy_loss.
POLICY_LOSS_KEYS = ("dro_beta", "clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio", "ppo_kl_coef")


def _default(value, default):
    return default if value is None else value
