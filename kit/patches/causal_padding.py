"""Padded micro-batches without an attention mask, so sdpa runs its flash kernel in the update and log-prob passes.

Without flash-attn (verl's remove-padding path needs it) verl's FSDP engine pads each micro-batch on the right and
passes a padding mask. A causal model's real tokens never attend to the padding after them, so the mask changes
nothing they compute; but with a mask, sdpa cannot use its flash kernel. This drops the mask and lets the position
ids run on through the padding (padding at position 0, as verl pads them, would look to transformers like the start
of another packed sequence and bring a mask back). Only the padding's own outputs change, and verl discards those.
On an H100, one micro-batch of 16 x 1,088 tokens of Qwen2.5-0.5B's shape took 0.407 s with the mask and 0.363 s
without (docs/update.md).

The outputs likewise: verl narrows the padded logits (rows, L, vocabulary) to each row's length as a nested tensor,
unbinds the rows and concatenates them, a copy of every real token's logits (10 GB in bf16 for 32,768 tokens of
Qwen2.5's 152k vocabulary) and as many again in the backward, with about a dozen read-backs from the GPU between
the forward and the backward (docs/update.md). When only the log-probs are asked for, this takes them
from the padded logits in place and picks each real token's with one index; the padding's few rows are computed
and dropped, as the model's layers already computed them.
"""

import torch
from torch.distributed.tensor import DTensor
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.engine.fsdp import transformer_impl

_verl_prepare_model_inputs = transformer_impl.FSDPEngineWithLMHead.prepare_model_inputs
_verl_prepare_model_outputs = transformer_impl.FSDPEngineWithLMHead.prepare_model_outputs
# micro-batch keys (with verl's defaults) under which verl's own outputs are needed: packed rows, fused kernels,
# entropy, sum of pi^2, distillation
VERLS_OUTPUTS = {"use_remove_padding": True, "use_fused_kernels": False, "calculate_entropy": False,
                 "calculate_sum_pi_squared": False, "distillation_use_topk": False, "distillation_only": False}


def prepare_model_inputs(self, micro_batch):
    """verl's model inputs; for right-padded rows whose positions count 0, 1, 2, ... no mask and positions 0..L-1."""
    inputs, output_args = _verl_prepare_model_inputs(self, micro_batch)
    mask, positions = inputs.get("attention_mask"), inputs.get("position_ids")
    if mask is not None and positions is not None and positions.dim() == 2:
        counting = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (b, L)
        if torch.equal(positions * mask, counting * mask):  # else (multimodal or custom positions): as verl does
            inputs["attention_mask"], inputs["position_ids"] = None, counting
    return inputs, output_args


def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
    """verl's model outputs; when they are the log-probs alone of right-padded rows, taken from the padded logits
    without copying them row by row."""
    logits = output.logits  # (b, L, V)
    if (any(tu.get_non_tensor_data(data=micro_batch, key=key, default=default) for key, default in VERLS_OUTPUTS.items())
            or tu.get_non_tensor_data(data=micro_batch, key="pad_mode", default=DatasetPadMode.NO_PADDING)
            != DatasetPadMode.NO_PADDING or isinstance(logits, DTensor) or "temperature" not in output_args):
        return _verl_prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func)
    rows, width = logits.shape[:2]
    offsets = micro_batch["input_ids"].offsets()  # (b + 1,): where each row's tokens start among all of them
    tokens = micro_batch["input_ids"].values().shape[0]  # known on the host, unlike offsets[-1]: no read-back
    row = torch.repeat_interleave(torch.arange(rows, device=logits.device), offsets.diff(), output_size=tokens)
    place = row * width + torch.arange(tokens, device=logits.device) - offsets[row]  # (tokens,) in the flat (b * L)
    labels = torch.zeros(rows * width, dtype=torch.long, device=logits.device).index_copy(
        0, place, output_args["input_ids_rmpad_rolled"])  # (b * L,): each real token's next token, as verl's
    logits = transformer_impl._scale_logits_by_temperature(logits, output_args["temperature"][:, None, None],
                                                           is_unit_temperature=output_args.get("temperature_is_one", False))
    log_probs = transformer_impl.logprobs_from_logits(logits=logits.reshape(rows * width, -1), labels=labels)  # (b * L,)
    return {"log_probs": torch.nested.nested_tensor_from_jagged(log_probs[place], offsets)}


def install():
    """In a worker process: every FSDP engine (actor, reference, critic) prepares its inputs this way, and the
    actor's and reference's take their log-probs this way."""
    transformer_impl.FSDPEngineWithLMHead.prepare_model_inputs = prepare_model_inputs
    transformer_impl.FSDPEngineWithLMHead.prepare_model_outputs = prepare_model_outputs
