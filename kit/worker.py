"""The Ray workers the kit runs: verl's ActorRolloutRefWorker plus the kit's `hf` generation, and verl's
TrainingWorker as the PPO critic.

verl 0.9.1 has no usable HF rollout, so `generate` samples with Hugging Face `generate` on the FSDP-wrapped
actor itself: always the current policy, no second copy of the weights, on CPU, one GPU or N GPUs.
"""

from contextlib import contextmanager, nullcontext

import torch
from tensordict import TensorDict
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, GenerationConfig
from verl.utils import model as verl_model
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.utils.device import get_device_name
from verl.utils.fsdp_utils import get_fsdp_full_state_dict
from verl.utils.torch_functional import get_response_mask
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from kit import cpu_platform
from kit.batching import rollout_layout


def _prepare_process():
    if get_device_name() == "cpu":
        cpu_platform.init_process_group()
        cpu_platform.register_fsdp_engines()


class KitWorker(ActorRolloutRefWorker):
    def __init__(self, config, role: str):
        _prepare_process()
        # verl's roles: actor, actor_rollout (+ the vllm/sglang server adapter), actor_rollout_ref (+ the
        # reference model). verl rejects "actor_ref", which the hf engine with a KL term needs; init_model
        # keys on substrings of the role, so that one starts as "actor" and builds exactly actor + ref.
        super().__init__(config, role="actor" if role == "actor_ref" else role)
        self.role = role
        self._is_ref = "ref" in role

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def generate(self, prompts: TensorDict) -> TensorDict:
        """Sample responses for left-padded prompts; return verl's padded rollout fields and log-probs."""
        engine = self.actor.engine
        meta = {key: tu.get(prompts, key) for key in ("temperature", "top_p", "max_new_tokens", "seed", "eos", "pad",
                                                      "micro_batch_size_per_gpu")}
        device = torch.device(get_device_name())
        input_ids = prompts["input_ids"].to(device)  # (B, P)
        prompt_mask = prompts["attention_mask"].to(device)  # (B, P)
        sampling = GenerationConfig(
            do_sample=meta["temperature"] > 0, temperature=meta["temperature"] or None, top_p=meta["top_p"],
            # Every field that shapes the distribution is set: unset ones come from the model's
            # generation_config (top_k=50 in many), and then the sampler is not the policy.
            top_k=0, min_p=None, typical_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
            max_new_tokens=meta["max_new_tokens"], eos_token_id=meta["eos"], pad_token_id=meta["pad"],
        )
        # Each data-parallel rank draws its own samples.
        torch.manual_seed(meta["seed"] + 1_000_003 * engine.get_data_parallel_rank())
        autocast = (
            nullcontext() if engine._autocast_dtype == torch.float32
            else torch.autocast(device_type=device.type, dtype=engine._autocast_dtype)
        )
        with engine.eval_mode(), torch.no_grad(), autocast, gathered_weights(engine.module):
            output = engine.module.generate(input_ids=input_ids, attention_mask=prompt_mask, generation_config=sampling)
        rollout = rollout_fields(input_ids, prompt_mask, output, meta["max_new_tokens"], meta["eos"], meta["pad"])
        rollout["rollout_log_probs"] = self._log_probs(rollout.clone(), meta["temperature"], meta["micro_batch_size_per_gpu"])
        return rollout.cpu()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def export_hf(self, path: str):
        """Write the actor as a Hugging Face folder that `AutoModelForCausalLM.from_pretrained` loads."""
        state_dict = get_fsdp_full_state_dict(self.actor.engine.module, offload_to_cpu=True, rank0_only=True)
        if torch.distributed.get_rank() == 0:
            model_config = self.actor.model_config
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(model_config.hf_config)
            model.generation_config = model_config.generation_config or model.generation_config
            model.save_pretrained(path, state_dict=state_dict)
            model_config.tokenizer.save_pretrained(path)
        torch.distributed.barrier()

    def _log_probs(self, rollout: TensorDict, temperature: float, micro_batch_size: int) -> torch.Tensor:
        """Log-probs of the sampled response tokens under the current weights (verl's own forward)."""
        data = left_right_2_no_padding(rollout)
        tu.assign_non_tensor(data, temperature=temperature or 1.0, calculate_entropy=False, compute_loss=False,
                             micro_batch_size_per_gpu=micro_batch_size)
        output = self.actor.infer_batch(data)
        return no_padding_2_padding(tu.get(output, "log_probs"), data).float()  # (B, R)


class CriticWorker(TrainingWorker):
    """verl's TrainingWorker holding the value model (a token-classification head with one label on the
    critic's base model), trained with verl's value loss. Colocated with the actor in the same process."""

    def __init__(self, config):
        _prepare_process()
        verl_model.load_valuehead_model = load_value_model
        super().__init__(config)


def load_value_model(local_path, torch_dtype, model_config, trust_remote_code):
    """verl's load_valuehead_model asks for flash_attention_2, which needs the flash-attn package; this
    loads the same model with the attention the config names (sdpa by default)."""
    return AutoModelForTokenClassification.from_pretrained(
        local_path, torch_dtype=torch_dtype, config=model_config, trust_remote_code=trust_remote_code,
        attn_implementation=model_config._attn_implementation or "sdpa",
    )


def rollout_fields(input_ids, prompt_mask, output, response_length, eos, pad) -> TensorDict:
    """verl's rollout layout: prompts left-padded (B, P), responses right-padded to (B, R), full sequences."""
    responses = output[:, input_ids.shape[1]:]
    responses = torch.nn.functional.pad(responses, (0, response_length - responses.shape[1]), value=pad)
    response_mask = get_response_mask(responses, eos_token=eos, dtype=prompt_mask.dtype)  # keeps the eos itself
    return rollout_layout(input_ids, prompt_mask, responses, response_mask)


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
