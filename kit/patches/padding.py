"""verl's `no_padding_2_padding` without its Python loop over rows.

verl's loss turns the flat per-token outputs of a micro-batch (log-probs, entropy, values) into a (rows, response
length) tensor with a slice, a pad and a stack per row, each slice bound read back from the GPU: on an H200 the
default task's 128 rows cost about 50 ms of host time in the forward and as many autograd nodes again in the
backward, while the GPU waited (bench/profile_update.py). This gathers the same values in one indexing op.
"""

import torch
from verl.utils import tensordict_utils as tu
from verl.workers.utils import losses


def no_padding_2_padding(tensor: torch.Tensor, data) -> torch.Tensor:
    """verl's signature and result: each row's response-token outputs, (rows, max response length, *), zero-padded.
    A causal model's output for a token sits at the position before it, hence the shift by one."""
    values = tensor.values() if tensor.is_nested else tensor  # (total tokens, *)
    prompts, responses = data["prompts"], data["responses"]
    max_response_len = tu.get_non_tensor_data(data=data, key="max_response_len", default=-1)
    if prompts.is_nested:
        prompt_lens, response_lens = prompts.offsets().diff(), responses.offsets().diff()  # (rows,) each
        if max_response_len < 0:
            max_response_len = int(response_lens.max())
    else:
        mask = data["attention_mask"]
        prompt_lens, response_lens = mask[:, : prompts.shape[1]].sum(1), mask[:, prompts.shape[1] :].sum(1)
        max_response_len = responses.shape[1]
    ends = (prompt_lens + response_lens).cumsum(0).to(values.device)  # each row's end in values
    response_lens = response_lens.to(values.device)
    columns = torch.arange(max_response_len, device=values.device)
    index = (ends - response_lens - 1)[:, None] + columns  # (rows, R): the position whose output is each token's
    inside = (columns < response_lens[:, None]).view(*index.shape, *(1,) * (values.ndim - 1))
    return torch.where(inside, values[index.clamp(max=len(values) - 1)], 0)


def install():
    """In a worker process: verl's losses (policy and value) read their outputs this way."""
    losses.no_padding_2_padding = no_padding_2_padding
