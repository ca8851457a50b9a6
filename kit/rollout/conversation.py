"""Multi-turn episodes as token ids: what the model sampled (trained) and what came back (not trained).

The model's tokens are kept exactly as sampled, never decoded and re-encoded, so the log-probs the update
uses are of the very tokens that were drawn. What comes back between its turns (tool results, an
environment's observations) is encoded once, as the chat template renders it after the model's turn (the
template's own text between turns included), and masked out of the loss.
"""

from dataclasses import dataclass, field

import torch
from verl.utils.model import compute_position_id_with_mask

from kit.data.task import checked_step
from kit.rollout.tools import ToolResult

# Per-episode figures that go into the batch's non_tensor_batch, for tool use and for environments.
TOOL_KEYS = ("turns", "tool_calls", "tool_errors", "tool_reward")
ENVIRONMENT_KEYS = ("turns", "env_reward", "env_success")


@dataclass
class Episode:
    prompt_ids: list[int]
    messages: list | None  # the chat so far, or None for a raw-text prompt
    env: object = None  # the env.py Environment this episode plays, if any
    response_ids: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)  # 1: sampled by the model, 0: a tool or environment message
    log_probs: list[float] = field(default_factory=list)  # the sampler's, 0 on untrained tokens
    entropy: list[float] = field(default_factory=list)  # the hf sampler's per token (kit/rollout/sampler.py), 0 on untrained
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_reward: float = 0.0
    env_reward: float = 0.0  # the sum of the environment's turn rewards
    env_success: float = 0.0  # info['success'] of the last step (else whether env_reward > 0)
    done: bool = False

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    def add_model_turn(self, ids: list[int], log_probs: list[float], entropy: list[float], text: str):
        self.response_ids += ids
        self.trained += [1] * len(ids)
        self.log_probs += log_probs
        self.entropy += entropy
        self.turns += 1
        if self.messages is not None:
            self.messages.append({"role": "assistant", "content": text})

    def add_messages(self, messages: list[dict], tokenizer):
        """What comes back after the model's turn (tool results, an observation): seen, never trained."""
        closed = bool(self.response_ids) and self.response_ids[-1] == tokenizer.eos_token_id
        ids = message_ids(tokenizer, self.messages, messages, closed)
        self.response_ids += ids
        self.trained += [0] * len(ids)
        self.log_probs += [0.0] * len(ids)
        self.entropy += [0.0] * len(ids)
        if self.messages is not None:
            self.messages += messages

    def truncate(self, limit: int) -> bool:
        """Cut the response to `limit` tokens; True if it reached the limit."""
        for tokens in (self.response_ids, self.trained, self.log_probs, self.entropy):
            del tokens[limit:]
        return len(self.response_ids) >= limit


def tool_reply(tools, episode: Episode, ids: list[int], text: str) -> list[dict] | None:
    """The results of the tool calls in the model's turn as tool messages; None when it made no call."""
    results: list[ToolResult] = tools.run_calls(ids) if tools else []
    episode.tool_calls += len(results)
    episode.tool_errors += sum(not r.ok for r in results)
    episode.tool_reward += sum(r.reward for r in results)
    return [{"role": "tool", "content": r.text} for r in results] or None


def environment_reply(episode: Episode, ids: list[int], text: str, timeout: float) -> list[dict] | None:
    """The model's turn is the action: the environment's observation as a user message; None when done."""
    observation, reward, done, info = checked_step(episode.env, text, timeout)
    episode.env_reward += reward
    episode.env_success = float(info.get("success", episode.env_reward > 0))
    return None if done else [{"role": "user", "content": observation}]


def message_ids(tokenizer, messages: list | None, new_messages: list[dict], closed: bool) -> list[int]:
    """Tokens for new messages after the model's last turn, up to the next assistant header.

    The chat template renders the conversation before and after the new messages; what it adds is their
    text. The template's own text after the model's end-of-turn token (often a newline) goes first, since
    the model stopped at that token; when the turn was cut at max_tokens_per_turn instead (not `closed`),
    the end-of-turn token goes first too."""
    if messages is None:  # raw text: hermes-style tool responses
        return tokenizer("".join(f"\n<tool_response>\n{m['content']}\n</tool_response>" for m in new_messages) + "\n",
                         add_special_tokens=False)["input_ids"]
    before = tokenizer.apply_chat_template(messages, tokenize=False)
    after = tokenizer.apply_chat_template(messages + new_messages, add_generation_prompt=True, tokenize=False)
    end_of_turn = before.rindex(tokenizer.eos_token) + (len(tokenizer.eos_token) if closed else 0)
    return tokenizer(before[end_of_turn:] + after[len(before):], add_special_tokens=False)["input_ids"]


def assemble(episodes: list[Episode], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_length: int,
             pad: int) -> dict:
    """verl's rollout layout: prompts left-padded (B, P), responses right-padded (B, R); response_mask is the
    loss mask (model tokens only), attention_mask covers tool tokens too."""
    rows = len(episodes)
    responses = torch.full((rows, response_length), pad, dtype=torch.long)
    response_mask = torch.zeros((rows, response_length), dtype=prompt_mask.dtype)
    response_attention = torch.zeros((rows, response_length), dtype=prompt_mask.dtype)
    log_probs = torch.zeros((rows, response_length))
    entropy = torch.zeros((rows, response_length))
    for row, episode in enumerate(episodes):
        length = len(episode.response_ids)
        responses[row, :length] = torch.tensor(episode.response_ids, dtype=torch.long)
        response_mask[row, :length] = torch.tensor(episode.trained, dtype=prompt_mask.dtype)
        response_attention[row, :length] = 1
        log_probs[row, :length] = torch.tensor(episode.log_probs)
        entropy[row, :length] = torch.tensor(episode.entropy)
    attention_mask = torch.cat([prompt_mask, response_attention], dim=1)  # (B, P + R)
    return {
        "prompts": prompt_ids,
        "responses": responses,
        "input_ids": torch.cat([prompt_ids, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask),
        "response_mask": response_mask,
        "rollout_log_probs": log_probs,
        "rollout_entropy": entropy,
    }
