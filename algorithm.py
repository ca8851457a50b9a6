"""algorithm.py: the RL loop. Run it with `python algorithm.py [key.sub=value ...]` (keys: config.yaml).

Each step: prompts from env.py -> n responses each (inference.py) -> rewards (my_reward.py through verl's
reward manager), minus a KL penalty if use_kl_in_reward -> old (and reference) log-probs, critic values for
GAE -> advantages (verl's estimator, GRPO by default) -> critic and actor updates with verl's losses
(training.py). Greedy validation on env.py's held-out split before training and every val_every steps; a
checkpoint every save_every steps that a killed run resumes from exactly; at the end a Hugging Face copy of
the actor and a plot of reward and accuracy in output_dir.
"""

import sys
from dataclasses import dataclass

from kit.patches import cpu_platform  # noqa: F401  first: on a machine without a GPU it selects the CPU platform before verl loads

import numpy as np
import torch
from omegaconf import DictConfig
from verl.trainer.ppo.core_algos import get_kl_controller
from verl.trainer.ppo.metric_utils import compute_data_metrics
from verl.trainer.ppo.ray_trainer import apply_kl_penalty, compute_advantage
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

import inference
import training
from kit.data.rewards import RewardScorer
from kit.data.task import Problems, Task
from kit.run import checkpoints
from kit.run.failures import one_line_errors
from kit.run.run_log import RunLog, outputs_written_after
from kit.run.stopping import GracefulStop
from kit.setup.help import help_text
from kit.setup.prepare import prepare


@dataclass
class Run:
    """What every step uses, built once."""
    cfg: DictConfig
    verl_cfg: DictConfig
    task: Task  # env.py: a dataset task (get_batch) or an Environment class (kit/data/task.py)
    tokenizer: object
    reward: RewardScorer
    workers: training.Workers
    engine: object  # the rollout engine (inference.start_engine): the actor workers for hf, verl's servers for vllm/sglang
    kl_ctrl: object  # verl's FixedKLController / AdaptiveKLController: the KL-in-reward coefficient
    tools: object  # tools.yaml's tools in multi-turn mode (kit/rollout/tools.ToolBox), else None


@one_line_errors
def main(overrides: list[str]):
    if overrides[:1] in (["--help"], ["-h"]):  # the usage and every key of config.yaml (or those under a prefix)
        print(help_text("config.yaml", *overrides[1:2]), end="")
        return
    # ---- setup: config and every check, resume point, task, reward, workers ----------------------------
    setup = prepare("config.yaml", overrides)  # kit/setup/prepare.py: a mistake is one line, before any worker starts
    cfg, verl_cfg, tokenizer = setup.cfg, setup.verl_cfg, setup.tokenizer
    total_steps = cfg.num_epochs * cfg.steps_per_epoch
    resume_from = checkpoints.find(cfg)
    state = checkpoints.load_state(resume_from) if resume_from else {"step": 0}
    if resume_from:
        checkpoints.check_matches(state, cfg, resume_from, critic=training.needs_critic(cfg))
        if state["step"] >= total_steps and outputs_written_after(cfg.output_dir, resume_from):  # else write them
            print(f"this run already finished: {resume_from} is step {state['step']} of {total_steps}. Raise "
                  "num_epochs or steps_per_epoch to train on, or set resume=off (or a new output_dir) to start over.")
            return
    task, tools = Task(cfg.env, cfg.data), inference.load_tools(cfg, tokenizer)
    reward = RewardScorer(verl_cfg, tokenizer, cfg.reward.timeout)
    workers = training.start_workers(cfg, verl_cfg)  # last: every mistake above is found before a worker starts
    run = Run(cfg, verl_cfg, task, tokenizer, reward, workers, inference.start_engine(cfg, verl_cfg, workers),
              get_kl_controller(verl_cfg.algorithm.kl_ctrl), tools)
    if resume_from:
        resume(run, resume_from, state)
    if not task.has_validation:
        print(f"note: {cfg.env} defines no get_val_batch(size), so validation is skipped")

    # ---- the loop ------------------------------------------------------------------------------------
    with RunLog(cfg, total_steps, first_step=state["step"]) as log, GracefulStop() as stop:
        if state["step"] == 0:
            validate(run, log, step=0)
        for step in range(state["step"] + 1, total_steps + 1):
            with log.timer("step"):
                metrics = train_step(run, log, step)
            log.log({**metrics, **run.task.on_step(metrics)}, step)  # env.py may adapt to the step (a curriculum)
            if cfg.val_every and step % cfg.val_every == 0 or step == total_steps:
                validate(run, log, step)
            if cfg.save_every and (step % cfg.save_every == 0 or step == total_steps) or stop.requested:
                save(run, step)
            if stop.requested:
                print(f"stopped by {stop.requested} after step {step}: checkpoint written; run the same command to resume")
                return
        training.export_hf(run.workers, f"{cfg.output_dir}/hf_model")
    print(f"done: Hugging Face model in {cfg.output_dir}/hf_model, metrics in {cfg.output_dir}/metrics.jsonl and .png")


def train_step(run: Run, log: RunLog, step: int) -> dict:
    cfg, n, metrics = run.cfg, run.cfg.n_generations, {}
    with log.timer("generation"):
        problems = run.task.draw(cfg.batch_size)  # B prompts, or B start states of the environment
        batch = rollout(run, problems, n, seed=cfg.seed + step)  # B*n rows
        batch.non_tensor_batch["uid"] = np.repeat([f"{step}-{i}" for i in range(cfg.batch_size)], n)  # groups
        metrics.update(inference.engine_timings(run.engine))  # vllm/sglang: weight sync and sleep, apart

    with log.timer("reward"):
        scores, accuracy = score(run, batch, problems, n)
        metrics.update({"reward/failed": run.reward.failed, "reward/timed_out": run.reward.timed_out})
        batch.batch["token_level_scores"] = scores  # (B*n, R): each response's score sits on its last token
        if cfg.algorithm.advantage_estimator == "remax":  # ReMax's baseline: the greedy response's reward
            greedy = rollout(run, problems, n=1, seed=cfg.seed + step, greedy=True)
            batch.batch["reward_baselines"] = score(run, greedy, problems, n=1)[0].sum(-1).repeat_interleave(n)  # (B*n,)

    with log.timer("log_prob"):
        if training.needs_old_log_probs(cfg):  # else on-policy: the update's own forward gives them
            batch = batch.union(training.compute_log_probs(run.workers, batch, cfg))  # old_log_probs, entropys
            if cfg.algorithm.policy_loss == "bypass_mode":  # the loss corrects against the sampler's own log-probs
                batch.batch["old_log_probs"] = batch.batch["rollout_log_probs"]
            elif "rollout_log_probs" in batch.batch.keys():  # engine vs trainer: rollout_corr/ metrics, rollout_is weights
                batch, correction = compute_rollout_correction_and_add_to_batch(batch, run.verl_cfg.algorithm.rollout_correction)
                metrics.update(correction)
        if training.needs_reference(cfg):
            batch = batch.union(training.compute_ref_log_probs(run.workers, batch, cfg))  # ref_log_prob
        if training.needs_critic(cfg):
            batch = batch.union(training.compute_values(run.workers, batch, cfg))  # values

    if cfg.algorithm.use_kl_in_reward:  # rewards -= kl_coef * KL(actor || ref) per token; adapts the coef
        batch, kl_metrics = apply_kl_penalty(batch, kl_ctrl=run.kl_ctrl, kl_penalty=cfg.algorithm.kl_penalty)
        metrics.update(kl_metrics)
    else:
        batch.batch["token_level_rewards"] = scores
    batch = compute_advantage(  # advantages, returns: (B*n, R)
        batch, adv_estimator=cfg.algorithm.advantage_estimator, gamma=cfg.algorithm.gamma, lam=cfg.algorithm.lam,
        num_repeat=n, norm_adv_by_std_in_grpo=cfg.algorithm.norm_adv_by_std_in_grpo, config=run.verl_cfg.algorithm,
    )

    with log.timer("update"):
        if training.needs_critic(cfg):
            metrics.update(training.update_critic(run.workers, batch, cfg))
        if step > cfg.training.critic.warmup_steps or not training.needs_critic(cfg):
            metrics.update(training.update_actor(run.workers, batch, cfg))

    mask = batch.batch["response_mask"].bool()
    entropy = batch.batch.get("entropys", batch.batch.get("rollout_entropy"))  # (B*n, R): the trainer's, hf's or none
    return {
        "train/reward_mean": scores.sum(-1).mean().item(),
        "train/accuracy": float(np.mean(accuracy)),
        **({"train/entropy": entropy[mask].mean().item()} if entropy is not None else {}),
        "train/sampled_tokens": int(mask.sum()),  # the model's own response tokens this step
        **metrics,
        **inference.episode_metrics(batch),  # multi-turn: turns and tool calls per episode
        **compute_data_metrics(batch, use_critic=training.needs_critic(cfg)),  # response_length/*, advantages, ...
    }


def rollout(run: Run, problems: Problems, n: int, seed: int, greedy: bool = False):
    """n responses (episodes) per problem, grouped by problem: a DataProto of B*n rows."""
    with inference.serving(run.engine):  # vllm/sglang: the actor's latest weights in, awake; asleep again after
        return inference.generate(run.engine, run.tokenizer, problems.prompts, run.cfg, n=n, seed=seed, greedy=greedy,
                                  tools=run.tools, environment=run.task.environment)


def score(run: Run, batch, problems: Problems, n: int) -> tuple[torch.Tensor, list[float]]:
    """Token-level scores (B*n, R) and each response's accuracy: from the reward function through verl's
    reward manager, or for an environment the episode's summed turn rewards."""
    if run.task.environment is not None:
        return run.reward.episode_scores(batch)
    return run.reward.score(batch, problems.repeated(n))


def validate(run: Run, log: RunLog, step: int):
    """Greedy accuracy and reward on env.py's held-out split."""
    if not run.task.has_validation:
        return
    problems = run.task.draw(run.cfg.val_size, held_out=True)
    batch = rollout(run, problems, n=1, seed=run.cfg.seed, greedy=True)
    scores, accuracy = score(run, batch, problems, n=1)
    episodes = {f"val/{key}": value for key, value in inference.episode_metrics(batch).items()}
    log.log({"val/accuracy": float(np.mean(accuracy)), "val/reward_mean": scores.sum(-1).mean().item(), **episodes}, step)


def save(run: Run, step: int):
    """Everything a resumed run needs to continue as if never stopped (kit/run/checkpoints.py)."""
    loop_state = {"kl_coef": float(run.kl_ctrl.value), "env": run.task.state_dict()}  # float: the adaptive one is numpy's
    with checkpoints.writing(run.cfg, step, loop_state) as folder:
        training.save_checkpoint(run.workers, folder, step)


def resume(run: Run, folder, state: dict):
    training.load_checkpoint(run.workers, str(folder))
    run.kl_ctrl.value = state["kl_coef"]
    if state["env"] is not None:
        run.task.load_state_dict(state["env"])
    else:
        print("note: env.py has no state_dict(), so its data order restarts rather than continues")
    checkpoints.restore_rng(state)
    print(f"resumed from {folder} (step {state['step']})")


if __name__ == "__main__":
    main(sys.argv[1:])
