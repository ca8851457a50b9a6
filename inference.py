"""inference.py: the rollout engine. Prompts in; n responses each out, as one verl DataProto.

Engine `hf` (the default) generates inside verl's actor workers with Hugging Face `generate` on the
FSDP-sharded actor weights (kit/worker.py): it always samples the current policy and needs no second copy
of the model. Rows come back grouped by prompt: prompt i owns rows i*n .. i*n + n - 1.
"""

import torch
from tensordict import TensorDict
from verl import DataProto
from verl.utils import tensordict_utils as tu

from kit.batching import micro_batch_size
from kit.errors import KitError

ENGINES = ("hf", "vllm", "sglang")


def check_engine(cfg):
    """Fail before any worker starts if the configured engine cannot run."""
    engine = cfg.inference.engine
    if engine not in ENGINES:
        raise KitError(f"inference.engine '{engine}' is unknown: choose one of {', '.join(ENGINES)}")
    if engine != "hf":
        raise KitError(f"inference.engine '{engine}' is not available in this version of the kit yet: use inference.engine=hf")
    if cfg.inference.multi_turn:
        raise KitError("inference.multi_turn is not available in this version of the kit yet: set inference.multi_turn=false")


def generate(workers, tokenizer, prompts: list, cfg, n: int, seed: int, greedy: bool = False) -> DataProto:
    """Sample n responses for each prompt (greedy for validation) on the actor workers."""
    prompt_ids = [encode_prompt(tokenizer, prompt) for prompt in prompts for _ in range(n)]
    check_prompt_length(prompt_ids, cfg)
    input_ids, attention_mask = left_pad(prompt_ids, tokenizer.pad_token_id)  # (B * n, P)
    request = TensorDict({"input_ids": input_ids, "attention_mask": attention_mask}, batch_size=len(prompt_ids))
    tu.assign_non_tensor(
        request,
        temperature=0.0 if greedy else cfg.inference.temperature,
        top_p=1.0 if greedy else cfg.inference.top_p,
        max_new_tokens=cfg.inference.max_response_length,
        seed=seed, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
        micro_batch_size_per_gpu=micro_batch_size(len(prompt_ids) // workers.world_size,
                                                  cfg.training.actor.batch_size_per_gpu),
    )
    return DataProto.from_tensordict(workers.generate(request))


def encode_prompt(tokenizer, prompt) -> list[int]:
    """A string is raw text; a list of {'role', 'content'} messages goes through the chat template."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def left_pad(sequences: list[list[int]], pad_id: int):
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq):] = torch.tensor(seq)
        attention_mask[row, width - len(seq):] = 1
    return input_ids, attention_mask


def check_prompt_length(prompt_ids, cfg):
    if min(len(ids) for ids in prompt_ids) == 0:
        raise KitError("env.py returned an empty prompt: every prompt needs at least one token")
    longest, limit = max(len(ids) for ids in prompt_ids), cfg.model_context
    if longest + cfg.inference.max_response_length > limit:
        raise KitError(
            f"a prompt of {longest} tokens plus inference.max_response_length={cfg.inference.max_response_length} "
            f"exceeds the model's context of {limit} tokens: shorten the prompts or max_response_length"
        )
