"""LoRA through verl's FSDP engine (training.actor.lora): the real workers on CPU, sharded over two workers."""

import os
import signal

import pytest
import ray
import torch
from conftest import kit_config
from peft import PeftModel
from test_end_to_end import TINY, run_kit
from test_resume import learning_metrics, start_run, wait_for_step
from transformers import AutoModelForCausalLM

import inference
import training
from kit.run.export import LORA_ADAPTER
from kit.setup.hardware import resolve_hardware
from kit.setup.verl_config import compose_verl_config, verl_overrides

LORA = ["training.actor.lora.rank=8", "training.actor.lora.alpha=16", "training.actor.lr=1e-2"]
PROMPTS = ["What is 3 + 4?", "What is 1 + 2?"]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_tokenizer):
    cfg = kit_config("model_path=embedded:tiny", "num_cpu_workers=2", "training.actor.use_kl_loss=true",
                     "inference.max_response_length=6", *LORA)
    resolve_hardware(cfg, node_gpus=[0])
    cfg.model_context = 512
    workers = training.start_workers(cfg, compose_verl_config(verl_overrides(cfg, tiny_model_dir, on_gpu=False)))
    yield cfg, workers, tiny_tokenizer
    ray.shutdown()


def base_log_probs(model_dir, batch) -> torch.Tensor:
    """Log-probs (B, R) of each sampled response token under the untrained model, straight from Hugging Face."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    ids, mask = batch.batch["input_ids"], batch.batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    responses = batch.batch["responses"]
    picked = logits[:, -responses.shape[1] - 1:-1].log_softmax(-1).gather(-1, responses[..., None])
    return picked[..., 0]


def weights_sent_to_servers(workers) -> tuple[dict[str, torch.Tensor], object]:
    """What verl's weight sync streams into vllm/sglang servers (CheckpointEngineManager -> update_weights): the
    actor engine's per-tensor weights and peft config, read on every worker at once (the gather is collective)."""
    def stream(colocated):  # verl's colocated-worker class holds the kit's worker under its role
        params, peft_config = colocated.worker_dict["actor"].actor.engine.get_per_tensor_param()
        return {name: tensor.detach().cpu() for name, tensor in params}, peft_config

    return ray.get([handle.__ray_call__.remote(stream) for handle in workers.actor.workers])[0]


def test_only_the_adapters_train_and_the_reference_is_the_base(setup, tiny_model_dir, tmp_path):
    cfg, workers, tok = setup
    assert training.actor_role(cfg) == "actor"  # no reference copy: the actor without its adapters
    batch = inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=0)
    mask = batch.batch["response_mask"].bool()
    untrained = base_log_probs(tiny_model_dir, batch)
    reference = training.compute_ref_log_probs(workers, batch, cfg).batch["ref_log_prob"]
    assert torch.allclose(reference[mask], untrained[mask], atol=1e-5)
    batch = batch.union(training.compute_ref_log_probs(workers, batch, cfg))
    batch.batch["advantages"] = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None].expand(4, 6).clone()
    metrics = training.update_actor(workers, batch, cfg)
    assert metrics["actor/grad_norm"] > 0

    # The policy moved, the reference did not, and the sampler samples the adapted policy (merged weights).
    actor = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    assert not torch.allclose(actor[mask], untrained[mask], atol=1e-3)
    reference = training.compute_ref_log_probs(workers, batch, cfg).batch["ref_log_prob"]
    assert torch.allclose(reference[mask], untrained[mask], atol=1e-5)
    fresh = inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=1)
    trainer = training.compute_log_probs(workers, fresh, cfg).batch["old_log_probs"]
    fresh_mask = fresh.batch["response_mask"].bool()
    assert torch.allclose(fresh.batch["rollout_log_probs"][fresh_mask], trainer[fresh_mask], atol=1e-5)

    # The export: the merged model is the untouched base plus the adapter, each loadable on its own.
    training.export_hf(workers, str(tmp_path / "hf"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    rebuilt = PeftModel.from_pretrained(base, tmp_path / "hf" / LORA_ADAPTER).merge_and_unload().state_dict()
    adapter_file = tmp_path / "hf" / LORA_ADAPTER / "adapter_model.safetensors"
    assert adapter_file.stat().st_mode == (tmp_path / "hf" / "config.json").stat().st_mode  # readable as the umask allows
    assert merged.keys() == rebuilt.keys()
    for name in merged:
        assert torch.allclose(merged[name], rebuilt[name], atol=1e-6), name
    untouched = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).state_dict()
    assert any(not torch.equal(merged[name], untouched[name]) for name in merged)

    # vllm and sglang get the same adapted policy: verl's weight sync sends the merged weights (model.lora.merge),
    # in bf16, under the Hugging Face names, and no adapter of its own.
    sent, peft_config = weights_sent_to_servers(workers)
    assert peft_config is None and sent.keys() == merged.keys()
    for name, tensor in sent.items():
        assert torch.allclose(tensor.float(), merged[name], rtol=8e-3, atol=1e-6), name
    moved = [name for name in sent if not torch.equal(merged[name], untouched[name])]
    assert moved and all(not torch.allclose(sent[name].float(), untouched[name], rtol=8e-3, atol=1e-6) for name in moved)


def test_a_killed_lora_run_resumes_exactly(tmp_path):
    run = [*TINY, *LORA, "steps_per_epoch=3", "save_every=1", "val_every=0", "training.actor.use_kl_loss=true"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_kit(*run, f"output_dir={straight}").returncode == 0
    process = start_run(killed, *run)
    wait_for_step(killed, process, 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    resumed = run_kit(*run, f"output_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert learning_metrics(killed) == learning_metrics(straight)
