"""algorithm.py: the RL loop. Run it with `python algorithm.py [key.sub=value ...]` (keys: config.yaml).

Each step: prompts from env.py -> n responses each (inference.py) -> rewards (my_reward.py through verl's
reward manager) -> old (and reference) log-probs -> advantages (verl's estimator, GRPO by default) -> one
actor update with verl's policy loss (training.py). Greedy validation on env.py's held-out split before
training and every val_every steps; a verl checkpoint every save_every epochs; at the end a Hugging Face
copy of the actor and a plot of reward and accuracy in output_dir.
"""

import sys

from kit import cpu_platform  # first: on a machine without a GPU it selects the CPU platform before verl loads

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer
from verl.trainer.ppo.metric_utils import compute_data_metrics
from verl.trainer.ppo.ray_trainer import compute_advantage

import inference
import training
from kit.config import load_config, resolve_hardware
from kit.errors import one_line_errors
from kit.models import resolve_model_path
from kit.preflight import check_algorithm, check_no_trl
from kit.rewards import RewardScorer
from kit.run_log import RunLog
from kit.task import checked_batch, load_env
from kit.verl_config import compose_verl_config, verl_overrides


@one_line_errors
def main(overrides: list[str]):
    # ---- setup: config, model, task, reward, workers --------------------------------------------------
    cfg = load_config("config.yaml", overrides)
    check_no_trl()
    check_algorithm(cfg)
    inference.check_engine(cfg)
    resolve_hardware(cfg, visible_gpus=torch.cuda.device_count())
    if cfg.num_gpus == 0:
        cpu_platform.enable()
    model_dir = resolve_model_path(cfg.model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg.model_context = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    verl_cfg = compose_verl_config(verl_overrides(cfg, model_dir, on_gpu=cfg.num_gpus > 0))
    env = load_env()
    reward = RewardScorer(verl_cfg, tokenizer)
    workers = training.start_workers(cfg, verl_cfg)
    total_steps = cfg.num_epochs * cfg.steps_per_epoch
    if not hasattr(env, "get_val_batch"):
        print("note: env.py defines no get_val_batch(size), so validation is skipped")

    # ---- the loop ------------------------------------------------------------------------------------
    with RunLog(cfg, total_steps) as log:
        validate(cfg, env, workers, tokenizer, reward, log, step=0)
        step = 0
        for epoch in range(1, cfg.num_epochs + 1):
            for _ in range(cfg.steps_per_epoch):
                step += 1
                log.log(train_step(cfg, verl_cfg, env, workers, tokenizer, reward, log, step), step)
                if cfg.val_every and step % cfg.val_every == 0 or step == total_steps:
                    validate(cfg, env, workers, tokenizer, reward, log, step)
            if cfg.save_every and epoch % cfg.save_every == 0:
                training.save_checkpoint(workers, f"{cfg.output_dir}/checkpoints/global_step_{step}", step)
        training.export_hf(workers, f"{cfg.output_dir}/hf_model")
    print(f"done: Hugging Face model in {cfg.output_dir}/hf_model, metrics in {cfg.output_dir}/metrics.jsonl and .png")


def train_step(cfg, verl_cfg, env, workers, tokenizer, reward, log, step: int) -> dict:
    n = cfg.n_generations
    with log.timer("generation"):
        prompts, truths = checked_batch(env.get_batch, cfg.batch_size)
        batch = inference.generate(workers, tokenizer, prompts, cfg, n=n, seed=cfg.seed + step)  # B*n rows
        batch.non_tensor_batch["uid"] = np.repeat([f"{step}-{i}" for i in range(len(prompts))], n)  # groups

    with log.timer("reward"):
        scores, accuracy = reward.score(batch, data_source(env), np.repeat(truths, n).tolist())
        batch.batch["token_level_scores"] = scores  # (B*n, R): each response's score sits on its last token
        batch.batch["token_level_rewards"] = scores

    with log.timer("log_prob"):
        batch = batch.union(training.compute_log_probs(workers, batch, cfg))  # old_log_probs, entropys
        if training.needs_reference(cfg):
            batch = batch.union(training.compute_ref_log_probs(workers, batch, cfg))  # ref_log_prob

    batch = compute_advantage(  # advantages, returns: (B*n, R)
        batch, adv_estimator=cfg.algorithm.advantage_estimator, gamma=cfg.algorithm.gamma, lam=cfg.algorithm.lam,
        num_repeat=n, norm_adv_by_std_in_grpo=cfg.algorithm.norm_adv_by_std_in_grpo, config=verl_cfg.algorithm,
    )

    with log.timer("update"):
        actor = training.update_actor(workers, batch, cfg)

    mask = batch.batch["response_mask"].bool()
    return {
        "train/reward_mean": scores.sum(-1).mean().item(),
        "train/accuracy": float(np.mean(accuracy)),
        "train/entropy": batch.batch["entropys"][mask].mean().item(),
        "actor/grad_norm": actor["grad_norm"],
        "actor/pg_loss": actor["actor/pg_loss"],
        "actor/ppo_kl": actor["actor/ppo_kl"],
        "actor/kl_loss": actor.get("kl_loss", 0.0),
        "actor/lr": actor["lr"],
        **compute_data_metrics(batch, use_critic=False),  # response_length/*, score, advantages, ...
    }


def validate(cfg, env, workers, tokenizer, reward, log, step: int):
    """Greedy accuracy on env.py's held-out split."""
    if not hasattr(env, "get_val_batch"):
        return
    prompts, truths = checked_batch(env.get_val_batch, cfg.val_size)
    batch = inference.generate(workers, tokenizer, prompts, cfg, n=1, seed=cfg.seed, greedy=True)
    _, accuracy = reward.score(batch, data_source(env), truths)
    log.log({"val/accuracy": float(np.mean(accuracy))}, step)


def data_source(env) -> str:
    return getattr(env, "DATA_SOURCE", env.__name__)


if __name__ == "__main__":
    main(sys.argv[1:])
