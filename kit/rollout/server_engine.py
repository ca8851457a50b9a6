"""The vllm and sglang engines: verl 0.9.1's server rollout on the actor's own GPUs.

verl starts one inference server per tensor-parallel group of the actor workers' GPUs (LLMServerManager),
sends it requests through its agent-loop workers (AgentLoopManager), and copies the actor's weights into it
(CheckpointEngineManager). Between rollouts the servers sleep: their weights and KV cache leave the GPU so
training has it. The kit builds the token ids itself (raw text, chat template, multi-turn context) and hands
them over through TokenAgentLoop, so every engine sees exactly the same prompts, and `generate` takes and
returns what the hf engine's does: the rest of the loop cannot tell the engines apart.
"""

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from tensordict import TensorDict
from verl import DataProto
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.profiler import simple_timer

from kit.rollout.batching import rollout_layout

# verl's agent-loop workers load their loops from this file (rollout.agent.agent_loop_config_path).
AGENT_LOOP_CONFIG = str(Path(__file__).with_name("agent_loops.yaml"))
AGENT_LOOP = "kit_tokens"


class ServerEngine:
    """verl's server rollout, driven like the hf engine: `generate(request)` and `world_size`."""

    def __init__(self, verl_cfg, actor):
        from verl.checkpoint_engine import CheckpointEngineManager
        from verl.experimental.agent_loop import AgentLoopManager
        from verl.workers.rollout.llm_server import LLMServerManager

        self.servers = LLMServerManager.create(config=verl_cfg, worker_group=actor)
        self.agent_loops = AgentLoopManager.create(config=verl_cfg, llm_client=self.servers.get_client())
        rollout = verl_cfg.actor_rollout_ref.rollout
        self.weights = CheckpointEngineManager(config=omega_conf_to_dataclass(rollout.checkpoint_engine),
                                               actor_wg=actor, replicas=self.servers.get_replicas())
        self.weights.sleep_replicas()  # the servers start on dummy weights: they wake with the actor's
        self.world_size = rollout.agent.num_workers  # requests are split evenly over the agent-loop workers
        self.version = 0
        # of the last rollout: weight_sync (waking the servers with the new weights), slowest_request, sleep
        self.seconds = {}

    @contextmanager
    def awake(self):
        """Copy the actor's current weights into the servers and wake them; put them to sleep afterwards."""
        self.version += 1
        start = time.perf_counter()
        self.weights.update_weights(self.version)
        self.seconds["weight_sync"] = time.perf_counter() - start
        self.seconds["slowest_request"] = 0.0
        try:
            yield
        finally:
            start = time.perf_counter()
            self.weights.sleep_replicas()
            self.seconds["sleep"] = time.perf_counter() - start

    def generate(self, request: TensorDict) -> TensorDict:
        """Left-padded prompts (B, P) and sampling settings in; verl's rollout layout out, as from the hf engine."""
        contexts = [ids[mask.bool()].tolist() for ids, mask in zip(request["input_ids"], request["attention_mask"])]
        settings = {key: tu.get(request, key) for key in ("temperature", "top_p", "max_new_tokens", "eos")}
        output = self.agent_loops.generate_sequences(agent_loop_requests(contexts, **settings))
        # the slowest request's wait in its agent loop (summed over a multi-turn rollout's turns): the rest of the
        # generation phase is verl's and the kit's own work around the engine
        self.seconds["slowest_request"] += float(output.meta_info["timing"]["agent_loop/generate_sequences/max"])
        return kit_layout(output.batch, settings["max_new_tokens"])


def agent_loop_requests(contexts: list[list[int]], temperature: float, top_p: float, max_new_tokens: int,
                        eos: int) -> DataProto:
    """One TokenAgentLoop request per context: the fields become run()'s keyword arguments."""
    rows = len(contexts)
    prompt_ids = np.empty(rows, dtype=object)
    for row, ids in enumerate(contexts):  # element-wise: numpy would make equal-length lists one 2-D array
        prompt_ids[row] = ids
    return DataProto(non_tensor_batch={
        "agent_name": np.full(rows, AGENT_LOOP, dtype=object),
        "prompt_ids": prompt_ids,
        "raw_prompt": prompt_ids,  # verl's post-processing keeps it alongside the output
        "temperature": np.full(rows, temperature, dtype=float),
        "top_p": np.full(rows, top_p, dtype=float),
        "max_tokens": np.full(rows, max_new_tokens, dtype=np.int64),
        "eos": np.full(rows, eos, dtype=np.int64),
    })


def kit_layout(batch: TensorDict, max_new_tokens: int) -> TensorDict:
    """verl pads prompts to rollout.prompt_length and responses to rollout.response_length; the hf engine pads
    prompts to the longest one and responses to max_new_tokens. Cut to that, so both engines look the same."""
    padded_width = batch["prompts"].shape[1]
    prompt_mask = batch["attention_mask"][:, :padded_width]  # (B, padded P), left-padded
    width = int(prompt_mask.sum(-1).max())
    prompts = batch["prompts"][:, padded_width - width:]  # (B, P)
    responses = batch["responses"][:, :max_new_tokens]  # (B, R)
    response_mask = batch["response_mask"][:, :max_new_tokens]  # (B, R): the generated tokens, eos included
    rollout = rollout_layout(prompts, prompt_mask[:, padded_width - width:], responses, response_mask)
    if "rollout_log_probs" in batch.keys():  # inference.engine_log_probs
        rollout["rollout_log_probs"] = batch["rollout_log_probs"][:, :max_new_tokens].float()  # (B, R), the engine's
    return rollout


class TokenAgentLoop(AgentLoopBase):
    """verl agent loop for prompts the kit has already tokenized: one generation, the engine's own log-probs."""

    async def run(self, sampling_params: dict[str, Any], *, prompt_ids, temperature, top_p, max_tokens, eos,
                  **kwargs) -> AgentLoopOutput:
        prompt_ids, max_tokens = list(prompt_ids), int(max_tokens)
        sampling = {**sampling_params, **engine_request_settings(self.rollout_config.name),
                    "temperature": float(temperature), "top_p": float(top_p), "top_k": -1, "max_tokens": max_tokens,
                    "stop_token_ids": [int(eos)]}
        metrics = {}
        with simple_timer("generate_sequences", metrics):  # verl's per-request metric: this request's wait
            output = await self.server_manager.generate(request_id=uuid4().hex, prompt_ids=prompt_ids,
                                                        sampling_params=sampling)
        response_ids = output.token_ids[:max_tokens]
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids,
            response_mask=[1] * len(response_ids),
            response_logprobs=output.log_probs[:len(response_ids)] if output.log_probs else None,
            num_turns=2,
            metrics=metrics,
        )


def engine_request_settings(engine: str) -> dict[str, Any]:
    """Settings for the engine itself, beyond sampling. By default vLLM hands each request's whole output so far to
    its waiting coroutine after every token, and decodes the tokens to text as it goes (for a log-prob's token it
    decodes the context again where a token ends mid-character): Python work per request per token, none of it
    used, since the kit reads only the final token ids and log-probs (as verl's server does)."""
    if engine != "vllm":
        return {}
    from vllm.sampling_params import RequestOutputKind  # where engine is vllm, the agent-loop workers have it

    return {"output_kind": RequestOutputKind.FINAL_ONLY, "detokenize": False}
