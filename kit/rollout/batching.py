"""verl's rollout layout that every engine returns."""

import torch
from tensordict import TensorDict
from verl.utils.model import compute_position_id_with_mask


def rollout_layout(prompts, prompt_mask, responses, response_mask) -> TensorDict:
    """verl's rollout layout from left-padded prompts (B, P) and right-padded responses (B, R), as every engine
    returns it: the full sequences, their attention mask and positions."""
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P + R)
    return TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention_mask,
            "position_ids": compute_position_id_with_mask(attention_mask),
            "response_mask": response_mask,
        },
        batch_size=prompts.shape[0],
    )
