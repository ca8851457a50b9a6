"""training.py: verl's FSDP actor and reference workers on Ray, and the calls the loop makes on them.

One Ray worker per GPU (or `num_cpu_workers` CPU workers when num_gpus is 0), each holding an FSDP2 shard
of the actor and, when a KL term needs it, of the frozen reference model. The driver keeps batches as
verl's padded DataProto; the workers take verl's jagged TensorDict, so every call converts on the way in
(left_right_2_no_padding) and out (no_padding_2_padding), exactly as verl's own trainer does.
"""

import os

import ray
import torch
from verl import DataProto
from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from kit.batching import micro_batch_size
from kit.worker import KitWorker


def start_workers(cfg, verl_cfg) -> RayWorkerGroup:
    """Start Ray and the actor (+ reference) workers, and load the model into them."""
    on_gpu = cfg.num_gpus > 0
    if not ray.is_initialized():
        if not on_gpu:  # Ray gives each worker one thread unless told; CPU workers share the cores instead
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, os.cpu_count() // cfg.num_workers)))
        ray.init(num_cpus=max(os.cpu_count(), cfg.num_workers), include_dashboard=False, log_to_driver=False)
    role = "actor_ref" if needs_reference(cfg) else "actor"
    pool = RayResourcePool([cfg.num_workers], use_gpu=on_gpu, max_colocate_count=1)
    worker = RayClassWithInitArgs(ray.remote(KitWorker), config=verl_cfg.actor_rollout_ref, role=role)
    workers = RayWorkerGroup(pool, worker, device_name="cuda" if on_gpu else "cpu")
    workers.init_model()
    return workers


def needs_reference(cfg) -> bool:
    return cfg.training.actor.use_kl_loss


def compute_log_probs(workers, batch: DataProto, cfg) -> DataProto:
    """Log-probs and entropy of the response tokens under the current actor: the PPO 'old' policy."""
    data = _to_workers(batch, workers, cfg, temperature=cfg.inference.temperature, calculate_entropy=True, compute_loss=False)
    output = workers.compute_log_prob(data)
    return DataProto.from_dict({
        "old_log_probs": no_padding_2_padding(tu.get(output, "log_probs"), data).float(),  # (B, R)
        "entropys": no_padding_2_padding(tu.get(output, "entropy"), data).float(),  # (B, R)
    })


def compute_ref_log_probs(workers, batch: DataProto, cfg) -> DataProto:
    """Log-probs of the response tokens under the frozen reference model, for the KL term."""
    data = _to_workers(batch, workers, cfg, temperature=cfg.inference.temperature, calculate_entropy=False, compute_loss=False)
    output = workers.compute_ref_log_prob(data)
    return DataProto.from_dict({"ref_log_prob": no_padding_2_padding(tu.get(output, "log_probs"), data).float()})


def update_actor(workers, batch: DataProto, cfg) -> dict:
    """One PPO update of the actor on this step's rollouts with verl's policy loss; returns its metrics."""
    actor = cfg.training.actor
    mini_batch_size = len(batch)  # all of this step's rollouts in one optimizer step: on-policy
    data = _to_workers(
        batch, workers, cfg, temperature=cfg.inference.temperature, calculate_entropy=actor.entropy_coeff != 0,
        global_batch_size=mini_batch_size, mini_batch_size=mini_batch_size, epochs=1, seed=cfg.seed,
        dataloader_kwargs={"shuffle": False}, compute_loss=True,
    )
    metrics = tu.get(workers.update_actor(data), "metrics")
    return {key: _mean(value) for key, value in metrics.items()}


def save_checkpoint(workers, folder: str, step: int):
    """verl's FSDP checkpoint of the actor: sharded weights, optimizer and LR-scheduler state."""
    workers.save_checkpoint(folder, global_step=step)


def export_hf(workers, folder: str):
    """The actor as a Hugging Face folder (weights, config, tokenizer)."""
    workers.export_hf(folder)


def _to_workers(batch: DataProto, workers, cfg, **meta):
    data = left_right_2_no_padding(batch.to_tensordict())
    micro = micro_batch_size(len(batch) // workers.world_size, cfg.training.actor.batch_size_per_gpu)
    tu.assign_non_tensor(data, micro_batch_size_per_gpu=micro, **meta)
    return data


def _mean(value) -> float:
    values = value if isinstance(value, list) else [value]
    return float(torch.tensor([float(v) for v in values]).mean())
