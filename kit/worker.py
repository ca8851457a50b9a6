"""The Ray workers the kit runs: verl's ActorRolloutRefWorker plus the kit's `hf` generation, and verl's
TrainingWorker as the PPO critic.

verl 0.9.1 has no usable HF rollout, so `generate` samples with the kit's sampler (kit/rollout/sampler.py): an
unsharded copy of the actor's model in each worker, given the actor's weights after each update,
decoding with a static KV cache and CUDA graphs. On CPU, one GPU or N GPUs.
"""

from contextlib import contextmanager

import ray
import torch
from tensordict import TensorDict
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForCausalLM
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.utils.device import get_device_name, set_expandable_segments
from verl.utils.torch_functional import get_response_mask
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from kit.patches import (causal_padding, cpu_platform, micro_batches, on_policy, optimizer_offload, padding, single_rank,
                         token_log_probs, value_model)
from kit.rollout.batching import rollout_layout
from kit.rollout.sampler import Sampler
from kit.run import export
from kit.run.checkpoints import limit_permissions


def install_patches():
    """Every patch of kit/patches a worker process needs, before verl builds its engine."""
    token_log_probs.install()
    causal_padding.install()
    padding.install()
    micro_batches.install()
    single_rank.install()
    value_model.install()
    if get_device_name() == "cpu":
        cpu_platform.init_process_group()
        cpu_platform.register_fsdp_engines()


class KitWorker(ActorRolloutRefWorker):
    def __init__(self, config, role: str):
        install_patches()
        # verl's roles: actor, actor_rollout (+ the vllm/sglang server adapter), actor_rollout_ref (+ the
        # reference model). verl rejects "actor_ref", which the hf engine with a KL term needs; init_model
        # keys on substrings of the role, so that one starts as "actor" and builds exactly actor + ref.
        super().__init__(config, role="actor" if role == "actor_ref" else role)
        self.role = role
        self._is_ref = "ref" in role
        self.sampler = None  # the hf engine's sampler, built at the first rollout
        self.sampler_policy = None  # the policy version whose weights the sampler holds

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        super().init_model()
        # verl's PPO loss, which on-policy takes the old log-probs from the update's own forward (kit/patches/on_policy.py)
        self.set_loss_fn(on_policy.PPOLoss(self.loss_fn.keywords["config"]))
        on_policy.rollout_corr_once_per_update(self.actor.engine)
        single_rank.step_local_tensors(self.actor.engine)  # clipping and AdamW on plain tensors when one rank holds all
        optimizer_offload.state_on_device_for_the_step_only(self.actor.engine)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def generate(self, prompts: TensorDict) -> TensorDict:
        """Sample responses for left-padded prompts; return verl's padded rollout fields and the sampler's log-probs."""
        meta = {key: tu.get(prompts, key) for key in ("temperature", "top_p", "max_new_tokens", "seed", "eos", "pad",
                                                      "cuda_graphs", "compile")}
        sampler = self._sampler(meta["cuda_graphs"], meta["compile"])
        # The policy changes only at an update, and each update steps the LR scheduler once (verl's last
        # mini-batch does): later turns of an episode and validation after a rollout skip the gather and copy.
        policy = self.actor.engine.lr_scheduler.last_epoch
        if policy != self.sampler_policy:
            with weights_on_device(self.actor.engine), gathered_weights(self.actor.engine.module):
                sampler.load_weights(self.actor.engine.module)
            self.sampler_policy = policy
        # Each data-parallel rank draws its own samples.
        torch.manual_seed(meta["seed"] + 1_000_003 * self.actor.engine.get_data_parallel_rank())
        input_ids = prompts["input_ids"].to(sampler.device)  # (B, P)
        prompt_mask = prompts["attention_mask"].to(sampler.device)  # (B, P)
        responses, log_probs, entropy = sampler.generate(input_ids, prompt_mask, meta["max_new_tokens"],
                                                         meta["temperature"], meta["top_p"], meta["eos"],
                                                         meta["pad"])  # (B, R) each
        rollout = rollout_fields(input_ids, prompt_mask, responses, meta["eos"])
        rollout["rollout_log_probs"], rollout["rollout_entropy"] = log_probs, entropy
        return rollout.cpu()

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def update_actor(self, data: TensorDict) -> TensorDict:
        """verl's update; with inference.free_sampler the sampler's copy and KV cache leave the GPU first, and the
        update allocates from expandable segments (as verl's own workers train beside a server engine), so that what
        it frees can go back to CUDA before the sampler is rebuilt, even where a few live blocks remain among it."""
        free_sampler = tu.get_non_tensor_data(data=data, key="free_sampler", default=False)
        if free_sampler and self.sampler is not None:
            self.sampler = self.sampler_policy = None
        if not (free_sampler and get_device_name() == "cuda"):
            return super().update_actor(data)
        # Without it the 7B shape kept 19.7 GiB more after its update than before it, with the cache emptied, and its
        # second rollout ran out of memory; with it the second rollout takes what the first did (docs/memory.md).
        torch.cuda.empty_cache()
        set_expandable_segments(True)
        try:
            return super().update_actor(data)
        finally:  # (the sampler, rebuilt at the next rollout, empties the cache first)
            set_expandable_segments(False)  # the sampler's CUDA graphs capture from ordinary segments

    def _sampler(self, cuda_graphs: bool, compiled: bool) -> Sampler:
        """The hf engine's sampler (kit/rollout/sampler.py), built at the first rollout: the actor's model, unsharded, in
        the dtype the actor computes in."""
        if self.sampler is None:
            on_gpu = get_device_name() == "cuda"
            if on_gpu:  # what the update freed (activations, an offloaded optimizer's state) goes back to CUDA first:
                # torch cannot release its cache while a CUDA graph is being captured (verl empties it before waking
                # a server too); a 7B run kept 90 GiB of one H200 after its update and its next rollout ran out
                torch.cuda.empty_cache()
            device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
            self.sampler = Sampler(self.actor.model_config.hf_config, self.actor.engine._autocast_dtype, device,
                                   cuda_graphs, compiled)
        return self.sampler

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def placement(self) -> tuple[str, str]:
        """This worker's Ray actor id and node id (a list over the workers, from the driver)."""
        context = ray.get_runtime_context()
        return context.get_actor_id(), context.get_node_id()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def export_hf(self, path: str):
        """Write the actor as a Hugging Face folder that `AutoModelForCausalLM.from_pretrained` loads; with LoRA
        the adapters merged in, and the adapters alone as a peft folder in path/lora_adapter (kit/run/export.py)."""
        model_config = self.actor.model_config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config.hf_config)
        model.generation_config = model_config.generation_config or model.generation_config
        with weights_on_device(self.actor.engine):
            export.write_hf_folder(path, self.actor.engine.module, model)
        if torch.distributed.get_rank() == 0:
            model_config.tokenizer.save_pretrained(path)
            limit_permissions(path, folders=0o755, files=0o644)  # others may read the model, never change it
        torch.distributed.barrier()


class CriticWorker(TrainingWorker):
    """verl's TrainingWorker holding the value model (a token-classification head with one label on the
    critic's base model), trained with verl's value loss. Colocated with the actor in the same process."""

    def __init__(self, config):
        install_patches()
        super().__init__(config)
        single_rank.step_local_tensors(self.engine)


def rollout_fields(input_ids, prompt_mask, responses, eos) -> TensorDict:
    """verl's rollout layout from left-padded prompts (B, P) and responses (B, R) that may run past their eos."""
    response_mask = get_response_mask(responses, eos_token=eos, dtype=prompt_mask.dtype)  # up to and with the eos
    return rollout_layout(input_ids, prompt_mask, responses, response_mask)


@contextmanager
def weights_on_device(engine):
    """verl's engine keeps offloaded weights (param_offload) in CPU memory outside its own calls: on the device
    for the duration of a gather."""
    if not engine.is_param_offload_enabled:
        yield
        return
    engine.to(get_device_name(), model=True, optimizer=False, grad=False)
    try:
        yield
    finally:
        engine.to("cpu", model=True, optimizer=False, grad=False)


@contextmanager
def gathered_weights(module):
    """Gather the FSDP2-sharded weights once for a whole generation.

    Left alone, FSDP2 all-gathers every layer at every decode step, and when ranks stop at different
    lengths (early eos) their collectives pair up wrongly or hang. Unsharded, generation needs none.
    """
    fsdp_modules = [m for m in module.modules() if isinstance(m, FSDPModule)]
    # verl's own post-forward setting per module (the root keeps its weights), restored afterwards.
    saved = [m._get_fsdp_state()._fsdp_param_group.post_forward_mesh_info for m in fsdp_modules]
    for m in fsdp_modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m, mesh_info in zip(fsdp_modules, saved):
            m.reshard()
            m._get_fsdp_state()._fsdp_param_group.post_forward_mesh_info = mesh_info
