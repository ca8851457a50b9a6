"""The vllm/sglang engines, up to the engine itself (CI has no GPU): config.yaml into verl's rollout config,
the kit's agent loop inside verl's real AgentLoopWorker, and its output in the hf engine's layout."""

import asyncio

import pytest
import torch
from conftest import kit_config
from transformers import AutoConfig, AutoModelForCausalLM
from verl.experimental.agent_loop import AgentLoopManager, AgentLoopWorker
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.rollout.replica import TokenOutput

import inference
import training
from kit.errors import KitError
from kit.rollout.sampler import Sampler
from kit.rollout.server_engine import AGENT_LOOP, AGENT_LOOP_CONFIG, agent_loop_requests, kit_layout
from kit.setup.hardware import resolve_hardware
from kit.setup.verl_config import compose_verl_config, verl_overrides
from kit.worker import rollout_fields

ENGINE = ["model_path=embedded:tiny", "inference.engine=vllm", "inference.gpu_memory_utilization=0.7",
          "inference.tensor_parallel_size=2", "inference.max_num_batched_tokens=4096", "inference.free_cache_engine=false",
          "inference.dtype=float16", "inference.enforce_eager=true", "inference.max_response_length=12", "algorithm.rollout_is=token"]


def engine_config(model_dir, *overrides, gpus=4):
    """The kit's config and verl's, as algorithm.main builds them on a machine with `gpus` GPUs."""
    cfg = kit_config(*ENGINE, *overrides)
    resolve_hardware(cfg, node_gpus=[gpus])
    cfg.model_context = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    return cfg, compose_verl_config(verl_overrides(cfg, model_dir, on_gpu=True))


@pytest.mark.parametrize("gpus, tensor_parallel, rows, per_replica", [
    (1, 1, "batch_size=64", 512), (4, 2, "batch_size=128", 512), (8, 1, "batch_size=128", 256)])
def test_every_rollout_of_a_step_runs_at_once_on_the_servers(tiny_model_dir, gpus, tensor_parallel, rows, per_replica):
    """vLLM's max_num_seqs (SGLang's max_running_requests) holds a step's rollouts per replica, so none wait for a
    second wave of decoding; never below verl's default."""
    cfg, verl_cfg = engine_config(tiny_model_dir, rows, f"inference.tensor_parallel_size={tensor_parallel}", gpus=gpus)
    assert verl_cfg.actor_rollout_ref.rollout.max_num_seqs == per_replica


def test_config_yaml_becomes_verls_rollout_config(tiny_model_dir):
    cfg, verl_cfg = engine_config(tiny_model_dir)
    rollout = omega_conf_to_dataclass(verl_cfg.actor_rollout_ref.rollout)  # verl's own dataclass checks it
    assert (rollout.name, rollout.mode, rollout.n) == ("vllm", "async", cfg.n_generations)
    assert (rollout.gpu_memory_utilization, rollout.tensor_model_parallel_size, rollout.max_num_batched_tokens) == (0.7, 2, 4096)
    assert (rollout.free_cache_engine, rollout.dtype, rollout.enforce_eager, rollout.n_gpus_per_node) == (False, "float16", True, 4)
    assert rollout.calculate_log_probs  # rollout_log_probs come back for the correction
    assert rollout.max_num_seqs == 256  # 16 x 8 rollouts over 2 replicas: verl's default is the floor
    assert rollout.prompt_length + rollout.response_length == cfg.model_context and rollout.response_length == 12
    assert (rollout.agent.agent_loop_config_path, rollout.agent.default_agent_loop) == (AGENT_LOOP_CONFIG, AGENT_LOOP)
    assert verl_cfg.algorithm.rollout_correction.rollout_is == "token"
    assert training.actor_role(cfg) == "actor_rollout"
    assert training.actor_role(kit_config("training.actor.use_kl_loss=true", "inference.engine=sglang")) == "actor_rollout_ref"
    assert training.actor_role(kit_config("training.actor.use_kl_loss=true")) == "actor_ref"


@pytest.mark.parametrize("overrides, message", [
    (["inference.tensor_parallel_size=3"], "inference.tensor_parallel_size=3 must divide the 4 GPUs each node trains on"),
    (["inference.gpu_memory_utilization=1.5"], "'inference.gpu_memory_utilization' must be a number in \\(0, 1\\]"),
    (["inference.dtype=fp8"], "'inference.dtype' must be one of bfloat16, float16; got 'fp8'"),
    (["inference.max_num_batched_tokens=0"], "'inference.max_num_batched_tokens' must be a positive integer"),
    (["algorithm.rollout_is=seq"], "'algorithm.rollout_is' must be one of null, token, sequence; got 'seq'"),
    (["algorithm.rollout_is_threshold=0"], "'algorithm.rollout_is_threshold' must be a number > 0"),
    (["inference.engine_log_probs=false", "algorithm.rollout_is=token"],
     "algorithm.rollout_is=token weighs the engine's own log-probs: set inference.engine_log_probs=true"),
    (["inference.engine_log_probs=false", "algorithm.rollout_is=null", "algorithm.policy_loss=bypass_mode"],
     "algorithm.policy_loss=bypass_mode weighs the engine's own log-probs: set inference.engine_log_probs=true"),
    (["inference.engine_log_probs=maybe"], "'inference.engine_log_probs' must be true or false"),
])
def test_bad_engine_settings_get_one_line(tiny_model_dir, overrides, message):
    with pytest.raises(KitError, match=message):
        engine_config(tiny_model_dir, *overrides)


class HFServer:
    """verl's server contract (LLMServerClient.generate -> TokenOutput), answered on the CPU by Hugging Face
    greedy generation: the engine itself needs a GPU, the agent loop and verl's worker around it do not."""

    def __init__(self, model_dir):
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.requests = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.requests.append(dict(sampling_params))
        prompt = torch.tensor([prompt_ids])
        with torch.no_grad():
            output = self.model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, top_p=None,
                                         top_k=None, max_new_tokens=sampling_params["max_tokens"],
                                         eos_token_id=sampling_params["stop_token_ids"])
            logits = self.model(output).logits[0, len(prompt_ids) - 1:-1]  # (new tokens, V)
        tokens = output[0, len(prompt_ids):]
        log_probs = torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, None])[:, 0]
        return TokenOutput(token_ids=tokens.tolist(), log_probs=log_probs.tolist() if sampling_params["logprobs"] else None)


@pytest.mark.parametrize("engine, log_probs", [("sglang", True), ("vllm", True), ("sglang", False)])
def test_agent_loop_output_has_the_hf_engines_layout(tiny_model_dir, tiny_tokenizer, engine, log_probs):
    if engine == "vllm":  # the kit's vLLM request settings are vLLM's own types: where it is installed (not CI)
        vllm_sampling = pytest.importorskip("vllm.sampling_params")
    correction = [] if log_probs else ["algorithm.rollout_is=null"]  # rollout_is weighs the engine's log-probs
    _, verl_cfg = engine_config(tiny_model_dir, f"inference.engine={engine}", f"inference.engine_log_probs={log_probs}",
                                *correction)
    server = HFServer(tiny_model_dir)
    worker = AgentLoopWorker(verl_cfg, llm_client=server)  # verl's own worker, loading the kit's loop from its file
    contexts = [tiny_tokenizer(text)["input_ids"] for text in ("What is 1 + 2?", "3 + 4 =", "What is 12 + 30? 12 + 30 =")]
    eos, pad, max_new = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id, 6
    output = asyncio.run(worker.generate_sequences(agent_loop_requests(contexts, 0.0, 1.0, max_new, eos)))
    got = kit_layout(output.batch, max_new)

    assert all(r["temperature"] == 0.0 and r["top_p"] == 1.0 and r["max_tokens"] == max_new and r["stop_token_ids"] == [eos]
               and r["logprobs"] is log_probs for r in server.requests)  # the request's settings reach the engine
    input_ids, prompt_mask = inference.left_pad(contexts, pad)  # (B, P): as the hf engine receives them
    sampler = Sampler(server.model.config, torch.float32, torch.device("cpu"), cuda_graphs=False)  # the hf engine's
    sampler.load_weights(server.model)
    responses, _, _ = sampler.generate(input_ids, prompt_mask, max_new, temperature=0.0, top_p=1.0, eos=eos, pad=pad)
    expected = rollout_fields(input_ids, prompt_mask, responses, eos)  # the hf engine's layout
    for key in expected.keys():
        assert torch.equal(got[key], expected[key]), key
    # each request's wait for the engine, as verl's manager summarises it (the kit logs timing/slowest_request)
    waits = [metric["generate_sequences"] for metric in output.meta_info["metrics"]]
    timing = AgentLoopManager._performance_metrics(None, [output.meta_info["metrics"]], output)
    assert len(waits) == len(contexts) and min(waits) > 0 and timing["agent_loop/generate_sequences/max"] == max(waits)
    if not log_probs:  # inference.engine_log_probs=false: none asked for, none in the batch
        assert "rollout_log_probs" not in got.keys()
        return
    assert got["rollout_log_probs"].shape == got["responses"].shape
    assert (got["rollout_log_probs"] < 0).sum() == got["response_mask"].sum()  # one log-prob per generated token
    if engine == "vllm":  # only the final output, token ids without text: what verl's server reads of it
        params = [vllm_sampling.SamplingParams(**{**request, "logprobs": 0}) for request in server.requests]
        assert all(p.output_kind == vllm_sampling.RequestOutputKind.FINAL_ONLY and not p.detokenize for p in params)
    else:
        assert all("output_kind" not in request and "detokenize" not in request for request in server.requests)


