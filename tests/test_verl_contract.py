"""Every place the kit reaches into verl's (or torch's) internals, checked directly, so an upgrade fails here
with a clear name rather than somewhere inside a Ray worker."""

import inspect
from contextlib import contextmanager
from importlib.metadata import version
from types import SimpleNamespace

import pytest
import torch

import verl
from torch.distributed.fsdp import FSDPModule
from verl.trainer.ppo import core_algos
from verl.workers.engine import EngineRegistry
from verl.workers.engine_workers import ActorRolloutRefWorker

from kit.patches import cpu_platform


def test_pinned_versions():
    assert verl.__version__ == "0.9.1"
    assert version("transformers") == "5.10.4" and version("tensordict") == "0.10.0"


def test_actor_rollout_ref_worker_keys_init_model_on_role_substrings():
    # kit/worker.py passes role "actor" to verl's constructor, then sets "actor_ref": init_model must build
    # the reference for any role containing "ref" and the actor for any containing "actor".
    source = inspect.getsource(ActorRolloutRefWorker.init_model)
    assert 'if "ref" in self.role:' in source and 'if "actor" in self.role:' in source
    assert 'if "rollout" in self.role:' in source


def test_engine_registry_layout():
    # kit/patches/cpu_platform.register_fsdp_engines adds a "cpu" key next to verl's cuda/npu ones.
    assert "cuda" in EngineRegistry._engines["language_model"]["fsdp2"]
    assert "cuda" in EngineRegistry._engines["value_model"]["fsdp2"]


def test_fsdp2_post_forward_setting_is_where_the_kit_saves_it():
    # kit/worker.gathered_weights saves and restores this private attribute around generation.
    assert hasattr(FSDPModule, "_get_fsdp_state") and hasattr(FSDPModule, "set_reshard_after_forward")
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    assert "post_forward_mesh_info" in inspect.getsource(FSDPParamGroup.__init__)


def test_process_group_backend_string_still_needs_the_cpu_workaround():
    from verl.utils import distributed

    assert 'f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in inspect.getsource(
        distributed.initialize_global_process_group_ray)


def test_registries_the_config_names_come_from():
    assert {"grpo", "rloo", "reinforce_plus_plus", "gae"} <= set(core_algos.ADV_ESTIMATOR_REGISTRY)
    assert {"vanilla", "gspo", "clip_cov"} <= set(core_algos.POLICY_LOSS_REGISTRY)


def test_value_model_loader_the_critic_worker_replaces():
    # kit/patches/value_model swaps verl.utils.model.load_valuehead_model (which asks for flash_attention_2);
    # verl's FSDP engine must still import it by name at model-build time, with the same parameters.
    from verl.utils import model
    from verl.workers.engine.fsdp import transformer_impl

    assert list(inspect.signature(model.load_valuehead_model).parameters) == [
        "local_path", "torch_dtype", "model_config", "trust_remote_code"]
    assert '"flash_attention_2"' in inspect.getsource(model.load_valuehead_model)
    assert "from verl.utils.model import load_valuehead_model" in inspect.getsource(transformer_impl)


def test_training_worker_protocol_the_critic_uses():
    from verl.single_controller.ray.base import create_colocated_worker_cls  # noqa: F401
    from verl.workers.engine_workers import TrainingWorker

    for name in ("infer_batch", "train_mini_batch", "set_loss_fn", "reset", "save_checkpoint", "load_checkpoint"):
        assert hasattr(TrainingWorker, name), name
    assert hasattr(ActorRolloutRefWorker, "set_loss_fn")


def test_driver_side_functions_and_their_inputs():
    from verl.trainer.ppo import ray_trainer

    source = inspect.getsource(ray_trainer.compute_advantage)
    for field in ('"reward_baselines"', '"sum_pi_squared"', '"values"', '"uid"'):  # what algorithm.py provides
        assert field in source, field
    assert list(inspect.signature(ray_trainer.apply_kl_penalty).parameters) == ["data", "kl_ctrl", "kl_penalty"]
    assert hasattr(core_algos, "get_kl_controller") and hasattr(core_algos.AdaptiveKLController(0.1, 0.1, 10), "value")


def test_checkpoint_rng_goes_through_the_device_module():
    # kit/patches/cpu_platform's device module answers get/set_rng_state because verl's checkpoints call them.
    from verl.utils.checkpoint.checkpoint_manager import BaseCheckpointManager

    assert "get_torch_device().set_rng_state" in inspect.getsource(BaseCheckpointManager.load_rng_state)


def test_token_log_probs_replace_verls_per_token_loop_with_the_same_values():
    # kit/patches/token_log_probs.install swaps the name verl's FSDP engine calls; its fallback must still be the loop.
    import torch
    from verl.utils import torch_functional
    from verl.workers.engine.fsdp import transformer_impl

    from kit.patches import token_log_probs

    assert "for logit in logits" in inspect.getsource(torch_functional.logprobs_from_logits_v2)
    assert "logprobs_from_logits(" in inspect.getsource(transformer_impl.FSDPEngineWithLMHead.prepare_model_outputs)
    assert_install_replaces(transformer_impl, "logprobs_from_logits", token_log_probs)
    torch.manual_seed(0)
    logits = torch.randn(2, 1500, 300) * 3  # more rows than one chunk
    labels, weights = torch.randint(0, 300, (2, 1500)), torch.randn(2, 1500)
    expected, expected_grad = value_and_grad(lambda x: torch_functional.logprobs_from_logits_v2(x, labels), logits, weights)
    got, got_grad = value_and_grad(lambda x: token_log_probs.logprobs_from_logits(x, labels), logits, weights)
    assert torch.allclose(got, expected, atol=1e-5) and torch.allclose(got_grad, expected_grad, atol=1e-6)


def assert_install_replaces(module, name: str, kit_module):
    """kit_module.install() puts kit_module's function of that name at module.name (restored afterwards)."""
    original = getattr(module, name)
    try:
        kit_module.install()
        assert getattr(module, name) is getattr(kit_module, name)
    finally:
        setattr(module, name, original)


def value_and_grad(function, x, weights):
    """function(x) and the gradient of (function(x) * weights).sum() with respect to x."""
    x = x.detach().requires_grad_()
    value = function(x)
    (value * weights).sum().backward()
    return value.detach(), x.grad


def test_causal_padding_drops_only_a_mask_that_changes_nothing(tiny_model_dir):
    # kit/patches/causal_padding wraps verl's prepare_model_inputs for padded micro-batches: no attention mask, positions
    # 0..L-1. The wrapped inputs must give the real tokens the same logits as verl's own.
    import torch
    from transformers import AutoModelForCausalLM
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
    from verl.workers.utils.padding import left_right_2_no_padding

    from kit.patches import causal_padding
    from kit.rollout.batching import rollout_layout

    prompts = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])  # left-padded (B, P)
    responses = torch.tensor([[11, 12, 2, 0], [13, 14, 15, 16]])  # right-padded (B, R), row 0 stops at eos 2
    batch = rollout_layout(prompts, (prompts != 0).long(), responses, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    micro_batch = left_right_2_no_padding(batch)
    tu.assign_non_tensor(micro_batch, use_remove_padding=False, temperature=1.0)
    engine = object.__new__(FSDPEngineWithLMHead)  # only the attribute the padded branch reads
    engine.pad_to_length = None
    verl_inputs, _ = causal_padding._verl_prepare_model_inputs(engine, micro_batch)
    kit_inputs, _ = causal_padding.prepare_model_inputs(engine, micro_batch)
    assert verl_inputs["attention_mask"] is not None and kit_inputs["attention_mask"] is None
    assert torch.equal(kit_inputs["position_ids"], torch.arange(8).expand(2, 8))
    assert torch.equal(kit_inputs["input_ids"], verl_inputs["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():
        verl_logits, kit_logits = (model(**inputs).logits for inputs in (verl_inputs, kit_inputs))
    real = verl_inputs["attention_mask"].bool()  # (B, L): 6 and 8 real tokens
    assert torch.allclose(kit_logits[real], verl_logits[real], atol=1e-5)


def test_log_probs_from_the_padded_logits_equal_verls_row_by_row_copy():
    # kit/patches/causal_padding.prepare_model_outputs takes the log-probs from the padded logits in place of verl's
    # narrow-unbind-concatenate: the same values and gradients, at a temperature other than 1, for rows of different
    # lengths; anything more asked for (here the entropy) goes through verl's own.
    from types import SimpleNamespace

    import torch
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
    from verl.workers.utils.padding import left_right_2_no_padding

    from kit.patches import causal_padding
    from kit.rollout.batching import rollout_layout

    source = inspect.getsource(causal_padding._verl_prepare_model_outputs)
    assert "logits = torch.nested.narrow(logits, 1, starts, seq_lengths, layout=torch.jagged)" in source
    assert "logits_rmpad = torch.cat([t for t in logits.unbind()])" in source
    prompts = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10], [0, 0, 0, 3]])  # left-padded (B, P)
    responses = torch.tensor([[11, 12, 2, 0], [13, 14, 15, 16], [17, 0, 0, 0]])  # right-padded (B, R)
    batch = rollout_layout(prompts, (prompts != 0).long(), responses, (responses != 0).long())
    micro_batch = left_right_2_no_padding(batch)
    tu.assign_non_tensor(micro_batch, use_remove_padding=False, temperature=0.7)
    engine = object.__new__(FSDPEngineWithLMHead)  # only the attributes the padded branches read
    engine.pad_to_length, engine.engine_config = None, SimpleNamespace(entropy_checkpointing=False)
    _, output_args = causal_padding._verl_prepare_model_inputs(engine, micro_batch)
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 50) * 3  # (B, L, V): the longest row has 8 tokens
    weights = torch.randn(int(micro_batch["input_ids"].offsets()[-1]))

    def log_probs(prepare, x):
        return prepare(engine, SimpleNamespace(logits=x), output_args, micro_batch, None)["log_probs"].values()

    expected = value_and_grad(lambda x: log_probs(causal_padding._verl_prepare_model_outputs, x), logits, weights)
    got = value_and_grad(lambda x: log_probs(causal_padding.prepare_model_outputs, x), logits, weights)
    assert torch.allclose(got[0], expected[0], atol=1e-6) and torch.allclose(got[1], expected[1], atol=1e-6)
    tu.assign_non_tensor(micro_batch, calculate_entropy=True)
    outputs = causal_padding.prepare_model_outputs(engine, SimpleNamespace(logits=logits), output_args, micro_batch, None)
    assert "entropy" in outputs and torch.allclose(outputs["log_probs"].values(), expected[0], atol=1e-6)
    causal_padding.install()  # both of its functions, restored afterwards
    try:
        assert FSDPEngineWithLMHead.prepare_model_inputs is causal_padding.prepare_model_inputs
        assert FSDPEngineWithLMHead.prepare_model_outputs is causal_padding.prepare_model_outputs
    finally:
        FSDPEngineWithLMHead.prepare_model_inputs = causal_padding._verl_prepare_model_inputs
        FSDPEngineWithLMHead.prepare_model_outputs = causal_padding._verl_prepare_model_outputs


def test_vectorised_no_padding_2_padding_equals_verls_loop():
    # kit/patches/padding replaces the per-row loop verl's losses call by this name; same values and gradients, for
    # per-token outputs of one and of two dimensions and rows of different prompt and response lengths.
    import torch
    from verl.workers.utils import losses, padding
    from verl.workers.utils.padding import left_right_2_no_padding

    from kit.patches import padding as kit_padding
    from kit.rollout.batching import rollout_layout

    assert "no_padding_2_padding(model_output[" in inspect.getsource(losses.ppo_loss)
    assert "no_padding_2_padding(model_output[" in inspect.getsource(losses.value_loss)
    prompts = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10], [0, 0, 0, 3]])  # left-padded (B, P)
    responses = torch.tensor([[11, 12, 2, 0], [13, 14, 15, 16], [17, 0, 0, 0]])  # right-padded (B, R)
    batch = rollout_layout(prompts, (prompts != 0).long(), responses, (responses != 0).long())
    data = left_right_2_no_padding(batch)
    tokens = int(data["input_ids"].offsets()[-1])
    for shape in ((tokens,), (tokens, 3)):
        values, weights = torch.randn(shape), torch.randn(3, 4, *shape[1:])
        expected = value_and_grad(lambda x: padding.no_padding_2_padding(x, data), values, weights)
        got = value_and_grad(lambda x: kit_padding.no_padding_2_padding(x, data), values, weights)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    nested = torch.nested.nested_tensor_from_jagged(torch.randn(tokens), data["input_ids"].offsets())
    assert torch.equal(kit_padding.no_padding_2_padding(nested, data), padding.no_padding_2_padding(nested, data))
    padded = batch.select("prompts", "responses", "attention_mask")  # verl's other layout: lengths from the mask
    assert not padded["prompts"].is_nested
    assert torch.equal(kit_padding.no_padding_2_padding(values, padded), padding.no_padding_2_padding(values, padded))
    assert_install_replaces(losses, "no_padding_2_padding", kit_padding)


def test_resource_pool_takes_the_placement_groups_the_kit_pins_to_nodes():
    # kit/setup/cluster.resource_pool sets RayResourcePool.pgs to groups pinned node by node, with verl's own bundle
    from verl.single_controller.ray import RayResourcePool

    source = inspect.getsource(RayResourcePool.get_placement_groups)
    assert "if self.pgs is not None:\n            return self.pgs" in source
    assert 'bundle = {"CPU": self.max_colocate_count}' in source and "bundle[device_name] = 1" in source


def test_what_the_kit_tells_verls_engine_per_call():
    # training._to_workers cuts micro-batches by tokens through these meta keys of verl's dynamic batch size.
    from verl.workers.engine import utils as engine_utils

    source = inspect.getsource(engine_utils.prepare_micro_batches)
    assert 'key="use_dynamic_bsz"' in source and 'data["max_token_len_per_gpu"]' in source


def test_the_on_policy_loss_fills_what_verls_ppo_loss_reads():
    # kit/patches/on_policy.PPOLoss sets old_log_probs (B, R) on the micro-batch before verl's loss selects it, and asks
    # verl for its rollout-correction metrics from the update's own log-probs once the engine's forward-and-backward
    # pass is done: the engine's train_batch must call forward_backward_batch with the worker's loss function and
    # hand on the metrics it returns.
    from verl.trainer.ppo import rollout_corr_helper
    from verl.workers import engine_workers
    from verl.workers.engine import base
    from verl.workers.utils import losses

    train_batch = inspect.getsource(base.BaseEngine.train_batch)
    assert "outputs = self.forward_backward_batch(data, loss_function, forward_only=False)" in train_batch
    assert 'outputs["metrics"]["grad_norm"] = grad_norm' in train_batch and "return outputs" in train_batch
    worker_train_batch = inspect.getsource(engine_workers.TrainingWorker.train_batch)
    assert "self.engine.train_batch(data, loss_function=self.loss_fn)" in worker_train_batch

    source = inspect.getsource(losses.ppo_loss)
    assert 'fields = ["response_mask", "old_log_probs", "advantages"]' in source
    assert 'log_prob = no_padding_2_padding(model_output["log_probs"], data)' in source
    assert list(inspect.signature(rollout_corr_helper.compute_rollout_corr_metrics_from_logprobs).parameters) == [
        "log_prob", "rollout_log_prob", "response_mask"]


@pytest.mark.parametrize("overrides, units", [
    ([], [""]),
    (["training.actor.lora.rank=4"], [""]),  # the hf engine merges the adapters itself (kit/lora.py)
    (["training.actor.lora.rank=4", "inference.engine=vllm"], ["", "model.layers.0", "model.layers.1"]),
])
def test_one_worker_wraps_the_whole_model_as_one_fsdp_unit(tiny_model_dir, tmp_path, overrides, units):
    # On one GPU kit/setup/verl_config.py names a layer class no model has: verl's apply_fsdp2 must then wrap the root
    # alone (checked here on the CPU with the config the kit makes for one GPU). Not with LoRA and a server engine:
    # verl merges adapters for the weight sync only inside per-layer units (the next test).
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForCausalLM
    from verl.utils.fsdp_utils import apply_fsdp2

    from conftest import kit_config
    from kit.setup.hardware import resolve_hardware
    from kit.setup.verl_config import compose_verl_config, verl_overrides

    cfg = kit_config("model_path=embedded:tiny", *overrides)
    resolve_hardware(cfg, node_gpus=[0])
    cfg.model_context = 512
    engine = compose_verl_config(verl_overrides(cfg, tiny_model_dir, on_gpu=True)).actor_rollout_ref.actor.fsdp_config
    with one_rank_process_group(tmp_path, "gloo"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
        apply_fsdp2(model, {"mesh": init_device_mesh("cpu", (1,))}, engine)
        assert [name for name, module in model.named_modules() if isinstance(module, FSDPModule)] == units


@pytest.mark.parametrize("per_layer_units", [False, True])
def test_verl_merges_lora_for_the_weight_sync_only_inside_per_layer_units(tiny_model_dir, tmp_path, per_layer_units):
    """verl's fsdp_merge_unmerge (behind the merged weights it streams to vllm/sglang) merges the adapters of the
    non-root FSDP units only: with the whole model as one unit the weights stay the base (on a GPU the servers then
    sampled the base, never the adapted policy), hence the kit's per-layer units for LoRA with a server engine."""
    from peft import LoraConfig, get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from verl.utils.fsdp_utils import fsdp_merge_unmerge

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False))
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    base = q_proj.base_layer.weight.detach().clone()
    delta = (q_proj.lora_B["default"].weight @ q_proj.lora_A["default"].weight).detach() * q_proj.scaling["default"]
    with one_rank_process_group(tmp_path, "gloo"):
        mesh = init_device_mesh("cpu", (1,))
        if per_layer_units:
            for layer in model.base_model.model.model.layers:
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        fsdp_merge_unmerge(model, do_merge=True)
        merged = q_proj.base_layer.weight.full_tensor()
    expected = base + delta if per_layer_units else base
    torch.testing.assert_close(merged, expected)


def test_verls_allocator_switch_the_free_sampler_update_uses(monkeypatch):
    """kit/worker.py: with inference.free_sampler the update allocates from expandable segments through verl's own
    switch (what verl's workers do while they train beside a server engine), which on a GPU sets torch's allocator."""
    from verl.plugin.platform.platform_cuda import PlatformCUDA
    from verl.utils import device

    settings = []
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", settings.append)
    monkeypatch.setattr(device, "get_platform", lambda: PlatformCUDA.__new__(PlatformCUDA))
    device.set_expandable_segments(True)
    device.set_expandable_segments(False)
    assert settings == ["expandable_segments:True", "expandable_segments:False"]


def test_verl_applies_liger_to_the_actor_and_the_kit_pins_the_version_it_names():
    """training.actor.liger becomes verl's model.use_liger: the FSDP engine patches the model it builds with
    Liger-Kernel (module-level, so the hf sampler built later gets the kernels too; tests/test_gpu.py)."""
    import tomllib
    from pathlib import Path

    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    from kit.setup.hardware import LIGER_VERSION

    source = inspect.getsource(FSDPEngine._build_module)
    assert "if use_liger:" in source and "_apply_liger_kernel_to_instance(" in source
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert all(f"liger-kernel=={LIGER_VERSION}" in extras[gpu] for gpu in ("vllm", "sglang"))


def test_verls_update_frees_the_gradients_before_it_offloads_anything():
    """Nothing holds the gradients through the rollout after an update: verl's train_mini_batch runs in the FSDP
    engine's train_mode context, whose exit sets them to None before it moves weights or optimizer state to the CPU
    (they are not what holds a 7B run's 90 GiB after its update). Here that context runs
    around a backward and a step of a small torch model standing in for the FSDP module."""
    import torch
    from verl.workers.engine.fsdp.transformer_impl import EngineTrainModeCtx, FSDPEngine
    from verl.workers.engine_workers import TrainingWorker

    # the update enters train_mode with zero_grad_on_exit at its default (True)
    assert "self.engine.train_mode(disable_auto_offload=disable_auto_offload)" in inspect.getsource(
        TrainingWorker.train_mini_batch)
    engine = FSDPEngine.__new__(FSDPEngine)  # the context's own code on the engine's attributes, no process group
    engine.module = torch.nn.Linear(4, 1)
    engine.optimizer = torch.optim.AdamW(engine.module.parameters(), lr=0.1)
    engine.engine_config = SimpleNamespace(forward_only=False, fsdp_size=1)
    engine.ulysses_parallel_group = None
    engine._is_offload_param = engine._is_offload_optimizer = False
    with EngineTrainModeCtx(engine):
        engine.module(torch.ones(2, 4)).sum().backward()
        assert all(p.grad is not None for p in engine.module.parameters())
        engine.optimizer.step()
    assert all(p.grad is None for p in engine.module.parameters())


def offloaded_updates(device: str, optimizer_offload: bool, kit: bool = True, updates: int = 3):
    """Updates of verl's FSDP engine (its train_mode context around a backward and its optimizer_step) of a small
    model fully sharded over a one-rank mesh, with the kit's changes as kit/worker.py makes them (kit=False: verl's
    own); and the devices of the optimizer's state during each update's forward and backward."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from verl.workers.engine.fsdp.transformer_impl import EngineTrainModeCtx, FSDPEngine

    from kit.patches import optimizer_offload as kit_offload
    from kit.patches import single_rank

    engine = FSDPEngine.__new__(FSDPEngine)  # the engine's own code on its attributes, in this process's group
    torch.manual_seed(0)
    engine.module = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).to(device)
    fully_shard(engine.module, mesh=init_device_mesh(device, (1,)))
    engine.optimizer = torch.optim.AdamW(engine.module.parameters(), lr=1e-2, fused=device == "cuda")
    engine.optimizer_config, engine.engine_config = SimpleNamespace(clip_grad=1.0), SimpleNamespace(forward_only=False)
    engine.ulysses_parallel_group, engine._qat_enabled = None, False
    engine._is_offload_param, engine._is_offload_optimizer = False, optimizer_offload
    if kit:
        single_rank.step_local_tensors(engine)
        kit_offload.state_on_device_for_the_step_only(engine)
    seen = []
    for _ in range(updates):
        with EngineTrainModeCtx(engine):
            seen.append({value.device.type for state in engine.optimizer.state.values() for value in state.values()
                         if isinstance(value, torch.Tensor)})
            engine.module(torch.ones(4, 8, device=device)).square().sum().backward()
            engine.optimizer_step()
    return engine, seen


@contextmanager
def one_rank_process_group(tmp_path, backend: str):
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_the_kit_moves_an_offloaded_optimizer_for_its_steps_only(tmp_path, monkeypatch):
    """kit/patches/optimizer_offload.py: verl's train_mode context loads an offloaded optimizer's state as an update begins
    and offloads it as the update ends, through FSDPEngine.to; with the kit's change only the optimizer step loads
    it and copies it back, and the steps give the same weights and state as without offload. (On a CPU nothing
    moves: tests/test_gpu.py checks where the state is on a GPU.)"""
    from verl.workers.engine.fsdp import transformer_impl

    from kit.patches import optimizer_offload
    from kit.patches.single_rank import full_tensor

    calls = []
    def recorded(name, function):
        def call(*args, **kwargs):
            calls.append(name(*args, **kwargs))
            return function(*args, **kwargs)
        return call
    monkeypatch.setattr(transformer_impl.FSDPEngine, "to", recorded(
        lambda engine, device, optimizer=True, **_: "verl moves the optimizer" if optimizer else "verl moves the rest",
        transformer_impl.FSDPEngine.to))
    monkeypatch.setattr(optimizer_offload, "load_fsdp_optimizer",
                        recorded(lambda *_: "kit loads", optimizer_offload.load_fsdp_optimizer))
    monkeypatch.setattr(optimizer_offload, "to_host", recorded(lambda *_: "kit offloads", optimizer_offload.to_host))
    with one_rank_process_group(tmp_path, "gloo"):
        offloaded_updates("cpu", optimizer_offload=True, kit=False, updates=2)
        assert calls == ["verl moves the optimizer"] * 4  # as each update begins and as it ends
        calls.clear()
        kit, _ = offloaded_updates("cpu", optimizer_offload=True)
        assert calls == ["verl moves the rest", "kit loads", "kit offloads", "verl moves the rest"] * 3
        plain, _ = offloaded_updates("cpu", optimizer_offload=False)
    for p, q in zip(kit.module.parameters(), plain.module.parameters()):
        assert torch.equal(p.full_tensor(), q.full_tensor())
        assert kit.optimizer.state[p].keys() == plain.optimizer.state[q].keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in kit.optimizer.state[p].items():
            assert torch.equal(full_tensor(value), full_tensor(plain.optimizer.state[q][key])), key


@pytest.mark.parametrize("fused", [False, True])
def test_one_rank_clipping_and_steps_on_local_tensors_equal_verls_dtensor_path(tiny_model_dir, tmp_path, fused):
    """kit/patches/single_rank.py: on a one-rank mesh (one worker), clipping and AdamW on the DTensors' local tensors give the
    same gradient norms, weights and optimizer state (still DTensors, for checkpoints) as verl's DTensor path."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from verl.utils.fsdp_utils import fsdp2_clip_grad_norm_
    from verl.workers.engine.fsdp import transformer_impl

    from kit.patches import single_rank

    source = inspect.getsource(transformer_impl.FSDPEngine.optimizer_step)  # the two calls the kit replaces
    assert "grad_norm = fsdp2_clip_grad_norm_(" in source and "self.optimizer.step()" in source
    assert transformer_impl.fsdp2_clip_grad_norm_ is fsdp2_clip_grad_norm_  # install() swaps this module global

    class Engine:  # verl's FSDPEngine.optimizer_step, reduced to the calls single_rank changes
        def __init__(self, clip):
            torch.manual_seed(0)
            self.module = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
            fully_shard(self.module, mesh=init_device_mesh("cpu", (1,)))
            self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-2, weight_decay=0.01, fused=fused,
                                               foreach=None if fused else True)
            self.clip = clip

        def optimizer_step(self):
            grad_norm = self.clip(self.module.parameters(), max_norm=1.0)
            self.optimizer.step()
            return grad_norm

    with one_rank_process_group(tmp_path, "gloo"):
        engines = {"verl": Engine(fsdp2_clip_grad_norm_), "kit": Engine(single_rank.clip_grad_norm_)}
        single_rank.step_local_tensors(engines["kit"])
        assert single_rank.on_one_rank(list(engines["kit"].module.parameters()))  # so the local path runs
        ids = torch.randint(0, 100, (2, 8))
        norms = {}
        for name, engine in engines.items():
            for _ in range(3):
                engine.optimizer.zero_grad()
                engine.module(input_ids=ids, labels=ids).loss.backward()
                norms.setdefault(name, []).append(float(engine.optimizer_step()))
        assert norms["kit"] == norms["verl"] and norms["kit"][0] > 1.0  # clipped: the norm is above max_norm
        for p, q in zip(engines["verl"].module.parameters(), engines["kit"].module.parameters()):
            assert torch.equal(p.full_tensor(), q.full_tensor())
            verl_state, kit_state = engines["verl"].optimizer.state[p], engines["kit"].optimizer.state[q]
            assert {k: type(v) for k, v in kit_state.items()} == {k: type(v) for k, v in verl_state.items()}
            for key, value in kit_state.items():
                assert torch.equal(single_rank.full_tensor(value), single_rank.full_tensor(verl_state[key])), key


@torch.no_grad()
def test_a_kept_optimizer_state_buffer_has_whole_pages_of_its_own(tmp_path):
    """kit/patches/optimizer_offload.own_pages, what page-locking needs on a GPU (CUDA refuses a page twice, and torch's
    pinned allocator rounds every block up to a power of two): a DTensor's CPU local tensor moved into whole pages
    it alone uses, shape and values kept, and still the DTensor's."""
    import mmap

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from kit.patches.optimizer_offload import on_host_like, own_pages
    from kit.patches.single_rank import local_tensor

    with one_rank_process_group(tmp_path, "gloo"):
        value = distribute_tensor(torch.randn(3, 5), init_device_mesh("cpu", (1,)), [Shard(0)])
        kept = on_host_like(value)
        start, length = own_pages(local_tensor(kept))
        local_tensor(kept).copy_(local_tensor(value))
        assert local_tensor(kept).untyped_storage().data_ptr() == local_tensor(kept).data_ptr() == start
        assert start % mmap.PAGESIZE == 0 and length == mmap.PAGESIZE
        assert kept.shape == value.shape and local_tensor(kept).stride() == local_tensor(value).stride()
        assert torch.equal(kept.full_tensor(), value.full_tensor())


def test_cpu_platform_is_verls_platform_here():
    from verl.plugin.platform import get_platform
    from verl.utils.device import get_device_name, get_nccl_backend

    assert isinstance(get_platform(), cpu_platform.PlatformCPU)
    assert get_device_name() == "cpu" and get_nccl_backend() == "gloo"
    assert torch.ones(2).pin_memory().device.type == "cpu"  # no-op instead of an accelerator error
    device = get_platform().device_module
    assert device.memory_allocated() == 0 and device.get_device_name() == "CPU"


def test_cpu_platform_registers_verls_fsdp_engines():
    from verl.workers.engine import EngineRegistry

    cpu_platform.register_fsdp_engines()
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__ == "FSDPEngineWithLMHead"
    assert EngineRegistry.get_engine_cls("value_model", "fsdp2").__name__ == "FSDPEngineWithValueHead"


def test_the_engine_keeps_its_autocast_dtype_where_the_sampler_reads_it():
    """kit/worker.py builds the hf sampler in the dtype the actor computes in: verl's FSDP engine's _autocast_dtype,
    set from the mixed-precision param_dtype when the model is built."""
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine, FSDPEngineWithLMHead

    assert "self._autocast_dtype = param_dtype" in inspect.getsource(FSDPEngine)
    assert 'autocast_dtype = getattr(self, "_autocast_dtype"' in inspect.getsource(FSDPEngineWithLMHead)


def test_tool_parsers_are_registered_where_the_kit_lists_them():
    """kit/rollout/tools.py checks inference.tool_parser against ToolParser._registry (verl has no public list)."""
    from verl.experimental.agent_loop.tool_parser import ToolParser

    assert isinstance(ToolParser._registry, dict) and {"hermes", "gpt-oss"} <= set(ToolParser._registry)
    assert all(issubclass(parser, ToolParser) for parser in ToolParser._registry.values())


def test_the_lr_schedulers_step_count_is_the_policy_version():
    """kit/worker.py takes the actor's lr_scheduler.last_epoch as the version of its weights: verl steps the scheduler
    exactly once per update_actor call, on its last mini-batch, and a step adds 1 to last_epoch."""
    from verl.workers import engine_workers
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    assert "update_lr_scheduler=batch_idx == total_num_iterations - 1" in inspect.getsource(
        engine_workers.TrainingWorker.train_mini_batch)
    assert "self.lr_scheduler.step()" in inspect.getsource(FSDPEngine.lr_scheduler_step)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    before = scheduler.last_epoch
    optimizer.step()
    scheduler.step()
    assert scheduler.last_epoch == before + 1


def test_group_estimators_are_verls_estimators_that_take_each_responses_group():
    """kit/setup/preflight.py refuses n_generations=1 for the estimators whose baseline is the other responses to the
    same prompt: those verl hands the group index."""
    from kit.setup.preflight import GROUP_ESTIMATORS

    takes_group = {name for name, fn in core_algos.ADV_ESTIMATOR_REGISTRY.items()
                   if "index" in inspect.signature(fn).parameters}
    assert set(GROUP_ESTIMATORS) == takes_group


def test_verls_engine_takes_its_micro_batches_from_the_name_the_kit_replaces():
    """kit/patches/micro_batches.py replaces rearrange_micro_batches in verl/workers/engine/utils.py, whose
    prepare_micro_batches calls it by that name, with these arguments, for every forward and update."""
    from verl.utils import seqlen_balancing
    from verl.workers.engine import utils as engine_utils

    from kit.patches import micro_batches

    assert engine_utils.rearrange_micro_batches in (seqlen_balancing.rearrange_micro_batches,
                                                    micro_batches.rearrange_micro_batches)  # verl's, or installed
    source = inspect.getsource(engine_utils.prepare_micro_batches)
    assert "micro_batches, batch_idx_list = rearrange_micro_batches(" in source
    assert list(inspect.signature(seqlen_balancing.rearrange_micro_batches).parameters) == [
        "batch", "max_token_len", "dp_group", "num_batches_divided_by", "same_micro_num_in_dp", "min_num_micro_batch",
        "use_dynamic_bsz_balance", "force_group_size"]


def test_verls_losses_are_normalised_by_the_global_batch_so_grouping_rows_changes_nothing():
    """The kit groups rows into other micro-batches than verl does: the sum of the micro-batches' losses is the same
    because agg_loss divides by the global batch's tokens (token-mean) or rows (seq-mean), not the micro-batch's."""
    torch.manual_seed(0)
    loss, mask = torch.randn(6, 5), (torch.rand(6, 5) > 0.3).float()
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        def total(parts):
            return sum(core_algos.agg_loss(loss[p], mask[p], mode, batch_num_tokens=int(mask.sum()), dp_size=1,
                                           global_batch_size=6) for p in parts)

        assert torch.allclose(total([[0, 1, 2, 3, 4, 5]]), total([[5, 1], [0], [2, 3, 4]])), mode
