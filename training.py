"""training.py: verl's FSDP actor, reference and critic workers on Ray, and the calls the loop makes on them.

One Ray worker per GPU (or `num_cpu_workers` CPU workers when num_gpus is 0). Each holds an FSDP2 shard of
the actor; of the frozen reference model when a KL term needs it; and, for GAE (PPO), of the critic: verl's
TrainingWorker with a value model, colocated in the same process (verl's create_colocated_worker_cls).
The driver keeps batches as verl's padded DataProto; the workers take verl's jagged TensorDict, so every
call converts on the way in (left_right_2_no_padding) and out (no_padding_2_padding) as verl's trainer does.
"""

import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import ray
import torch
from verl import DataProto
from verl.single_controller.ray import RayClassWithInitArgs, RayWorkerGroup
from verl.single_controller.ray.base import create_colocated_worker_cls
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import TrainingWorkerConfig
from verl.workers.utils.losses import value_loss
from verl.workers.utils.padding import left_right_2_no_padding

from kit.patches.on_policy import ON_POLICY, SUM_PI_SQUARED_ESTIMATORS, needs_old_log_probs  # algorithm.py asks this
from kit.patches.padding import no_padding_2_padding  # verl's, vectorised
from kit.setup import cluster
from kit.worker import CriticWorker, KitWorker


@dataclass
class Workers:
    actor: RayWorkerGroup  # actor (+ reference) on every worker; the hf engine generates in it (inference.py)
    critic: RayWorkerGroup | None  # value model in the same processes, for GAE; None otherwise


def start_workers(cfg, verl_cfg) -> Workers:
    """Start Ray and the workers, and load the models into them."""
    on_gpu = cfg.num_gpus > 0
    if not on_gpu:  # Ray gives each worker one thread unless told; CPU workers share the cores instead
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, os.cpu_count() // max(cfg.worker_layout))))
    if cfg.ray_address is None:
        cluster.start_local(cfg)  # else algorithm.py joined the cluster (kit/setup/cluster.py)
    roles = {"actor": RayClassWithInitArgs(ray.remote(KitWorker), config=verl_cfg.actor_rollout_ref, role=actor_role(cfg))}
    if needs_critic(cfg):
        critic_cfg = omega_conf_to_dataclass(verl_cfg.critic)
        roles["critic"] = RayClassWithInitArgs(ray.remote(CriticWorker), config=TrainingWorkerConfig(
            model_type="value_model", model_config=critic_cfg.model, engine_config=critic_cfg.engine,
            optimizer_config=critic_cfg.optim, checkpoint_config=critic_cfg.checkpoint,
        ))
    pool = cluster.resource_pool(cfg, on_gpu)  # cfg.worker_layout: workers per node
    with contextlib.redirect_stdout(io.StringIO()):  # verl prints the colocated class's base class
        worker_class = create_colocated_worker_cls(roles)
    colocated = RayWorkerGroup(pool, worker_class, device_name="cuda" if on_gpu else "cpu")
    groups = colocated.spawn(prefix_set=roles.keys())
    groups["actor"].init_model()
    if cfg.ray_address is not None:  # where they landed, node by node (and so which node a dead worker was on)
        print(cluster.remember_placement(groups["actor"].placement()))
    if needs_critic(cfg):
        groups["critic"].reset()  # builds the value model, its optimizer and LR schedule
        groups["critic"].set_loss_fn(partial(value_loss, config=critic_cfg))
    return Workers(actor=groups["actor"], critic=groups.get("critic"))


def actor_role(cfg) -> str:
    """verl's role for the actor workers: the actor, with verl's server adapter when vllm/sglang generate on
    the same GPUs, and with the frozen reference model when a KL term needs it (with LoRA the reference is the
    actor with its adapters switched off: no second copy)."""
    role = "actor" if cfg.inference.engine == "hf" else "actor_rollout"
    return role + "_ref" if needs_reference(cfg) and not uses_lora(cfg) else role


def needs_critic(cfg) -> bool:
    return cfg.algorithm.advantage_estimator == "gae"


def needs_reference(cfg) -> bool:
    return cfg.training.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward


def uses_lora(cfg) -> bool:
    return cfg.training.actor.lora.rank > 0


def compute_log_probs(workers: Workers, batch: DataProto, cfg) -> DataProto:
    """Log-probs and entropy of the response tokens under the current actor: the PPO 'old' policy
    (and, for the optimal-token-baseline estimators, the sum over the vocabulary of pi^2 per token)."""
    sum_pi_squared = cfg.algorithm.advantage_estimator in SUM_PI_SQUARED_ESTIMATORS
    data = _to_workers(batch, cfg, calculate_entropy=True,
                       calculate_sum_pi_squared=sum_pi_squared, compute_loss=False)
    output = workers.actor.compute_log_prob(data)
    fields = {"old_log_probs": "log_probs", "entropys": "entropy"} | ({"sum_pi_squared": "sum_pi_squared"} if sum_pi_squared else {})
    return DataProto.from_dict({name: no_padding_2_padding(tu.get(output, key), data).float()  # each (B, R)
                                for name, key in fields.items()})


def compute_ref_log_probs(workers: Workers, batch: DataProto, cfg) -> DataProto:
    """Log-probs of the response tokens under the frozen reference model, for the KL terms."""
    base_of_actor = uses_lora(cfg)  # with LoRA the reference is the actor with its adapters switched off
    data = _to_workers(batch, cfg, calculate_entropy=False, compute_loss=False, no_lora_adapter=base_of_actor)
    output = (workers.actor.compute_log_prob if base_of_actor else workers.actor.compute_ref_log_prob)(data)
    return DataProto.from_dict({"ref_log_prob": no_padding_2_padding(tu.get(output, "log_probs"), data).float()})


def compute_values(workers: Workers, batch: DataProto, cfg) -> DataProto:
    """The critic's value of every response token, for GAE."""
    data = _to_workers(batch, cfg, compute_loss=False)
    output = workers.critic.infer_batch(data).get()
    return DataProto.from_dict({"values": no_padding_2_padding(tu.get(output, "values"), data).float()})  # (B, R)


def update_actor(workers: Workers, batch: DataProto, cfg) -> dict:
    """PPO update of the actor on this step's rollouts with verl's policy loss: ppo_epochs passes, one
    optimizer step per mini-batch of prompts. A batch without old_log_probs takes them from the update's own
    forward (on-policy, see needs_old_log_probs). Returns actor/* metrics (which ones depends on the loss)."""
    actor = cfg.training.actor
    data = _to_workers(batch, cfg, calculate_entropy=actor.entropy_coeff != 0, compute_loss=True,
                       free_sampler=cfg.inference.free_sampler,
                       **{ON_POLICY: "old_log_probs" not in batch.batch.keys()}, **_update_plan(cfg, len(batch)))
    return _named_metrics(workers.actor.update_actor(data), "actor")


def update_critic(workers: Workers, batch: DataProto, cfg) -> dict:
    """Regress the critic's values on this step's returns with verl's clipped value loss: critic/* metrics."""
    data = _to_workers(batch, cfg, **_update_plan(cfg, len(batch)))
    return _named_metrics(workers.critic.train_mini_batch(data).get(), "critic")


def save_checkpoint(workers: Workers, folder: str, step: int):
    """verl's FSDP checkpoints (sharded weights, optimizer, LR schedule, worker RNG) of the actor in
    folder/actor and of the critic in folder/critic."""
    workers.actor.save_checkpoint(f"{folder}/actor", global_step=step)
    if workers.critic is not None:
        workers.critic.save_checkpoint(f"{folder}/critic", global_step=step)


def load_checkpoint(workers: Workers, folder: str):
    workers.actor.load_checkpoint(f"{folder}/actor")
    if workers.critic is not None:
        workers.critic.load_checkpoint(f"{folder}/critic")


def export_hf(workers: Workers, folder: str):
    """The actor as a Hugging Face folder (weights, config, tokenizer), written under a hidden name and renamed
    when complete: a run killed mid-export leaves no folder that looks whole."""
    final = Path(folder)
    scratch = final.with_name(f".{final.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    workers.actor.export_hf(str(scratch))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(scratch, final)


def _update_plan(cfg, rows: int) -> dict:
    optimizer_steps = cfg.batch_size // (cfg.training.actor.mini_batch_size or cfg.batch_size)  # per epoch
    mini_batch = rows // optimizer_steps  # rows per optimizer step
    return {"global_batch_size": mini_batch, "mini_batch_size": mini_batch, "epochs": cfg.training.actor.ppo_epochs,
            "seed": cfg.seed, "dataloader_kwargs": {"shuffle": False}}


def _to_workers(batch: DataProto, cfg, **meta):
    """verl's jagged layout, split on each worker into micro-batches of at most max_tokens_per_gpu tokens (verl's
    dynamic batch size; a micro-batch holds at least one row, so the limit is at least the longest row)."""
    longest = int(batch.batch["attention_mask"].sum(-1).max())
    # Tensors only: the workers read none of the rows' Python objects (uids, ground truths, reward extras), and
    # DataProto.to_tensordict wraps each one in a tensorclass, 0.1 s of the default step on the CPU.
    data = left_right_2_no_padding(tu.get_tensordict(tensor_dict=batch.batch.to_dict()))
    tu.assign_non_tensor(data, use_dynamic_bsz=True, max_token_len_per_gpu=max(cfg.training.actor.max_tokens_per_gpu, longest),
                         temperature=cfg.inference.temperature, **meta)
    return data


def _named_metrics(output, role: str) -> dict:
    """verl's update metrics under role/ (mean over micro-batches and epochs); its estimate of the update's model
    FLOPs utilisation as perf/mfu/<role> and the worker's peak GPU memory as perf/max_memory_allocated_gb."""
    metrics = {}
    for key, value in tu.get(output, "metrics").items():
        values = torch.tensor([float(v) for v in (value if isinstance(value, list) else [value])])
        if key == "mfu":
            metrics[f"perf/mfu/{role}"] = values.mean().item()
        elif key.startswith("rollout_corr/"):  # the on-policy update's own (kit/patches/on_policy.py)
            metrics[key] = values.mean().item()
        elif key == "perf/max_memory_allocated_gb":
            metrics[key] = values.max().item()
        elif not key.startswith("perf/"):
            metrics[f"{role}/{key.removeprefix(role + '/')}"] = values.mean().item()
    return metrics
