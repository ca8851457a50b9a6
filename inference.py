"""inference.py: the rollout engine. Prompts in; n responses each out, as one verl DataProto.

Engine `hf` (the default) generates inside verl's actor workers (kit/worker.py) with the kit's sampler
(kit/rollout/sampler.py): a plain copy of the actor's model given its current weights before each rollout, a static
KV cache, and on GPUs each decode step replayed as one CUDA graph. Engines `vllm` and `sglang` are verl's
inference servers on the same GPUs, given the actor's weights before each rollout and put to sleep after it
(kit/rollout/server_engine.py). All three take the same requests and return the same layout. Rows come back grouped by
prompt: prompt i owns rows i*n .. i*n + n - 1.

With inference.multi_turn the model takes turns: the tool calls it writes run (tools.yaml, kit/rollout/tools.py)
and their results come back as tool messages until it stops calling. With an env.py Environment class each
turn is an action and the environment's observation comes back as the next user message. The model's own
tokens are kept exactly as sampled and are the only ones trained (kit/rollout/conversation.py).
"""

from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
from tensordict import TensorDict
from verl import DataProto
from verl.utils import tensordict_utils as tu

from kit.data.task import start_messages
from kit.errors import KitError
from kit.rollout.conversation import ENVIRONMENT_KEYS, TOOL_KEYS, Episode, assemble, environment_reply, tool_reply
from kit.rollout.server_engine import ServerEngine
from kit.rollout.tools import ToolBox



def start_engine(cfg, verl_cfg, workers):
    """hf samples inside the actor workers themselves; vllm and sglang are verl's inference servers, started on
    the same GPUs (kit/rollout/server_engine.py). Either one generates with `generate(engine, ...)` below."""
    if cfg.inference.engine == "hf":
        return workers.actor
    return ServerEngine(verl_cfg, workers.actor)


def serving(engine):
    """vllm/sglang: copy the actor's current weights into the servers and wake them, and put them back to sleep
    when the rollout is done, to free the GPU for training. The hf engine is the actor: nothing to do."""
    return engine.awake() if isinstance(engine, ServerEngine) else nullcontext()


def engine_timings(engine) -> dict:
    """vllm/sglang: seconds the last rollout spent copying weights in and waking the servers, waiting for the
    slowest request, and putting the servers back to sleep (all inside timing/generation)."""
    return {f"timing/{part}": seconds for part, seconds in engine.seconds.items()} if isinstance(engine, ServerEngine) else {}


def load_tools(cfg, tokenizer) -> ToolBox | None:
    """The tools of tools.yaml, in multi-turn mode (None otherwise)."""
    if not cfg.inference.multi_turn:
        return None
    return ToolBox(cfg.inference.tools, tokenizer, parser=cfg.inference.tool_parser, timeout=cfg.inference.tool_timeout,
                   max_calls=cfg.inference.max_calls_per_turn, max_output=cfg.inference.max_tool_output)


def generate(engine, tokenizer, prompts: list, cfg, n: int, seed: int, greedy: bool = False, tools=None,
             environment=None) -> DataProto:
    """Sample n responses for each prompt (greedy for validation) with the engine; in multi-turn mode
    whole conversations with tool calls. With an env.py Environment class, `prompts` are start states (the
    seeds reset() takes) and each gets n episodes."""
    if environment is not None:
        timeout = cfg.inference.env_timeout
        episodes = [new_episode(tokenizer, start_messages(env, seed=start, timeout=timeout), env=env)
                    for start in prompts for env in (environment() for _ in range(n))]
        respond = partial(environment_reply, timeout=timeout)
        return converse(engine, tokenizer, episodes, cfg, seed, greedy, respond=respond, keys=ENVIRONMENT_KEYS)
    if cfg.inference.multi_turn:
        episodes = [new_episode(tokenizer, prompt, tools=tools.schemas if tools else None)
                    for prompt in prompts for _ in range(n)]
        return converse(engine, tokenizer, episodes, cfg, seed, greedy, respond=partial(tool_reply, tools), keys=TOOL_KEYS)
    encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts]  # once each: the n rows of a prompt share it
    prompt_ids = [ids for ids in encoded for _ in range(n)]
    check_prompt_length(prompt_ids, cfg)
    return DataProto.from_tensordict(generate_turn(engine, tokenizer, prompt_ids, cfg, seed, greedy,
                                                   max_new_tokens=cfg.inference.max_response_length))


def converse(engine, tokenizer, episodes: list[Episode], cfg, seed: int, greedy: bool, respond, keys: tuple) -> DataProto:
    """The model writes a turn; respond(episode, ids, text) answers it (tool results, the environment's next
    observation) or ends the episode; again, until inference.max_turns turns or max_response_length tokens in
    all (the model's and the replies'; only the model's are trained). The episodes' `keys` join the batch."""
    limit = cfg.inference.max_response_length
    check_prompt_length([e.prompt_ids for e in episodes], cfg)
    for turn in range(cfg.inference.max_turns):
        active = [e for e in episodes if not e.done]
        if not active:
            break
        budget = min(max(limit - len(e.response_ids) for e in active), cfg.inference.max_tokens_per_turn or limit)
        rollout = generate_turn(engine, tokenizer, [e.context for e in active], cfg, seed + 7919 * turn, greedy, budget)
        unsampled = torch.zeros(rollout["responses"].shape)  # (B, R): what the engine did not return
        log_probs = rollout.get("rollout_log_probs", unsampled)  # none from a server engine with engine_log_probs=false
        entropy = rollout.get("rollout_entropy", unsampled)  # hf's only
        for row, episode in enumerate(active):
            length = min(int(rollout["response_mask"][row].sum()), limit - len(episode.response_ids))  # up to eos
            ids = rollout["responses"][row, :length].tolist()
            text = tokenizer.decode(ids, skip_special_tokens=True)
            episode.add_model_turn(ids, log_probs[row, :length].tolist(), entropy[row, :length].tolist(), text)
            reply = respond(episode, ids, text)
            episode.done = reply is None or turn + 1 == cfg.inference.max_turns or len(episode.response_ids) >= limit
            if not episode.done:
                episode.add_messages(reply, tokenizer)
                episode.done = episode.truncate(limit)
    prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in episodes], tokenizer.pad_token_id)
    batch = DataProto.from_dict(assemble(episodes, prompt_ids, prompt_mask, limit, tokenizer.pad_token_id))
    for key in ("rollout_log_probs", "rollout_entropy"):  # the zeros stood in for what the engine did not return
        if key not in rollout.keys():
            del batch.batch[key]
    for key in keys:
        batch.non_tensor_batch[key] = np.array([getattr(e, key) for e in episodes], dtype=object)
    return batch


def new_episode(tokenizer, prompt, tools: list | None = None, env=None) -> Episode:
    return Episode(encode_prompt(tokenizer, prompt, tools), None if isinstance(prompt, str) else list(prompt), env)


def episode_metrics(batch: DataProto) -> dict:
    """Turns per episode in multi-turn mode, and tool use when tools answered (an environment's episodes
    have no tool figures: their reward is the score)."""
    stats = batch.non_tensor_batch
    if "turns" not in stats:
        return {}
    metrics = {"episode/turns": float(stats["turns"].astype(float).mean())}
    if "tool_calls" in stats:
        calls, errors = stats["tool_calls"].astype(float), stats["tool_errors"].astype(float)
        metrics.update({
            "episode/tool_calls": float(calls.mean()),
            "episode/tool_errors": float(errors.mean()),
            "episode/well_formed_call_share": float((calls > errors).mean()),
        })
    return metrics


def generate_turn(engine, tokenizer, contexts: list[list[int]], cfg, seed: int, greedy: bool, max_new_tokens: int):
    """One turn for every context: verl's rollout layout (B, ...) as a TensorDict."""
    spare = -len(contexts) % engine.world_size  # every worker takes the same number of rows
    input_ids, attention_mask = left_pad(contexts + contexts[:1] * spare, tokenizer.pad_token_id)  # (B, P)
    request = TensorDict({"input_ids": input_ids, "attention_mask": attention_mask}, batch_size=len(input_ids))
    tu.assign_non_tensor(
        request,
        temperature=0.0 if greedy else cfg.inference.temperature,
        top_p=1.0 if greedy else cfg.inference.top_p,
        max_new_tokens=max_new_tokens,
        seed=seed, eos=tokenizer.eos_token_id, pad=tokenizer.pad_token_id, cuda_graphs=cfg.inference.cuda_graphs,
        compile=cfg.inference.compile,
    )
    return engine.generate(request)[:len(contexts)]


def encode_prompt(tokenizer, prompt, tools: list | None = None) -> list[int]:
    """A string is raw text; a list of {'role', 'content'} messages goes through the chat template (which
    also describes the tools, if it can)."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    text = tokenizer.apply_chat_template(list(prompt), tools=tools, add_generation_prompt=True, tokenize=False)
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
