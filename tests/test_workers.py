"""The real verl workers on CPU: KitWorker (verl's ActorRolloutRefWorker + the kit's hf generation) on Ray."""

import copy

import numpy as np
import pytest
import ray
import torch
from conftest import kit_config
from transformers import AutoModelForCausalLM
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_corr_metrics_from_logprobs
from verl.utils.torch_functional import get_response_mask

import inference
import training
from kit.setup.hardware import resolve_hardware
from kit.setup.verl_config import compose_verl_config, verl_overrides


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_tokenizer):
    cfg = kit_config("model_path=embedded:tiny", "num_cpu_workers=2", "training.actor.use_kl_loss=true",
                     "inference.max_response_length=6", "training.actor.lr=1e-3")
    resolve_hardware(cfg, node_gpus=[0])
    cfg.model_context = 512
    verl_cfg = compose_verl_config(verl_overrides(cfg, tiny_model_dir, on_gpu=False))
    workers = training.start_workers(cfg, verl_cfg)
    yield cfg, workers, tiny_tokenizer
    ray.shutdown()


PROMPTS = ["What is 3 + 4?", [{"role": "user", "content": "What is 1 + 2?"}]]


def test_generate_returns_verl_rollout_layout(setup):
    cfg, workers, tok = setup
    batch = inference.generate(workers.actor, tok, PROMPTS, cfg, n=4, seed=0)
    b = batch.batch
    assert len(batch) == 8 and b["responses"].shape == (8, 6)  # max_response_length honoured
    prompt_len = b["prompts"].shape[1]
    assert torch.equal(b["input_ids"], torch.cat([b["prompts"], b["responses"]], dim=1))
    assert torch.equal(b["response_mask"], get_response_mask(b["responses"], eos_token=tok.eos_token_id,
                                                             dtype=b["response_mask"].dtype))
    assert torch.equal(b["attention_mask"][:, prompt_len:], b["response_mask"])
    # rows are grouped by prompt: the first 4 share prompt 0's tokens
    assert (b["prompts"][:4] == b["prompts"][0]).all() and not torch.equal(b["prompts"][0], b["prompts"][4])
    assert b["rollout_log_probs"].shape == (8, 6) and (b["rollout_log_probs"] <= 0).all()


def test_rollout_log_probs_match_the_trainers_log_probs(setup):
    cfg, workers, tok = setup
    batch = inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=1)
    old = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    mask = batch.batch["response_mask"].bool()
    assert torch.allclose(batch.batch["rollout_log_probs"][mask], old[mask], atol=1e-5)


def test_greedy_is_deterministic_and_sampling_follows_the_seed(setup):
    cfg, workers, tok = setup
    greedy = [inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=s, greedy=True).batch["responses"] for s in (0, 1)]
    assert torch.equal(*greedy)
    same = [inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=5).batch["responses"] for _ in range(2)]
    assert torch.equal(*same)


def test_update_changes_the_policy_that_generates_next(setup, tmp_path):
    cfg, workers, tok = setup
    batch = inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=2)
    batch = batch.union(training.compute_log_probs(workers, batch, cfg))
    batch = batch.union(training.compute_ref_log_probs(workers, batch, cfg))
    batch.batch["advantages"] = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None].expand(4, 6).clone()
    metrics = training.update_actor(workers, batch, cfg)
    assert metrics["actor/grad_norm"] > 0 and np.isfinite(metrics["actor/pg_loss"]) and "actor/kl_loss" in metrics
    after = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    assert not torch.allclose(after, batch.batch["old_log_probs"])
    # the sampler generates with the updated weights: its log-probs are the trainer's new ones
    fresh = inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=3)
    trainer = training.compute_log_probs(workers, fresh, cfg).batch["old_log_probs"]
    mask = fresh.batch["response_mask"].bool()
    assert torch.allclose(fresh.batch["rollout_log_probs"][mask], trainer[mask], atol=1e-5)
    # the reference model stays frozen
    ref_after = training.compute_ref_log_probs(workers, batch, cfg).batch["ref_log_prob"]
    assert torch.allclose(ref_after, batch.batch["ref_log_prob"])


def test_on_policy_update_equals_the_update_after_a_log_prob_pass(setup, tmp_path):
    """kit/patches/on_policy.py: with one epoch over one mini-batch, old log-probs taken from the update's own forward give
    the same losses, gradient and new weights as verl's path with a log-prob pass of its own (float32, CPU)."""
    cfg, workers, tok = setup
    assert not training.needs_old_log_probs(cfg)
    batch = inference.generate(workers.actor, tok, PROMPTS, cfg, n=2, seed=4)
    batch = batch.union(training.compute_ref_log_probs(workers, batch, cfg))
    batch.batch["advantages"] = torch.tensor([1.0, -0.5, 0.5, -1.0])[:, None].expand(4, 6).clone()
    training.save_checkpoint(workers, str(tmp_path / "before"), step=0)
    with_pass = copy.deepcopy(batch).union(training.compute_log_probs(workers, batch, cfg))  # (union is in place)
    updated = {"log-prob pass": training.update_actor(workers, with_pass, cfg)}
    after = {"log-prob pass": training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]}
    training.load_checkpoint(workers, str(tmp_path / "before"))
    updated["on-policy"] = training.update_actor(workers, batch, cfg)  # no old_log_probs in the batch
    after["on-policy"] = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    training.load_checkpoint(workers, str(tmp_path / "before"))
    without_sampler_log_probs = copy.deepcopy(batch)  # as from vllm/sglang with inference.engine_log_probs=false
    del without_sampler_log_probs.batch["rollout_log_probs"]
    updated["no sampler log-probs"] = training.update_actor(workers, without_sampler_log_probs, cfg)
    assert not any(key.startswith("rollout_corr/") for key in updated["no sampler log-probs"])
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "actor/loss"):
        assert updated["on-policy"][key] == pytest.approx(updated["log-prob pass"][key], rel=1e-5, abs=1e-7), key
        assert updated["no sampler log-probs"][key] == pytest.approx(updated["on-policy"][key], rel=1e-5, abs=1e-7), key
    assert torch.allclose(after["on-policy"], after["log-prob pass"], atol=1e-6)  # the same new weights
    assert not torch.allclose(after["on-policy"], with_pass.batch["old_log_probs"])  # which did move
    assert updated["on-policy"]["rollout_corr/log_ppl_abs_diff"] < 1e-5  # sampler and trainer agree, as measured
    # computed once over the whole batch, as verl's trainer does after a log-prob pass
    whole_batch = compute_rollout_corr_metrics_from_logprobs(with_pass.batch["old_log_probs"], batch.batch["rollout_log_probs"],
                                                             batch.batch["response_mask"].bool())
    for key, value in whole_batch.items():
        assert updated["on-policy"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_checkpoint_and_hugging_face_export(setup, tmp_path):
    cfg, workers, tok = setup
    training.save_checkpoint(workers, str(tmp_path / "ckpt"), step=1)
    assert (tmp_path / "ckpt").is_dir() and any((tmp_path / "ckpt").iterdir())
    training.export_hf(workers, str(tmp_path / "hf"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = tok("What is 1 + 1?", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1]


def test_micro_batches_of_like_length_give_the_update_of_one_micro_batch(setup, tmp_path):
    """kit/patches/micro_batches.py: an update over micro-batches of one or two rows (sorted by length) gives the same
    losses, gradient and new weights as over the whole batch in one micro-batch (float32, CPU)."""
    cfg, workers, tok = setup
    batch = inference.generate(workers.actor, tok, PROMPTS, cfg, n=4, seed=6)  # 8 rows of unequal lengths
    batch = batch.union(training.compute_ref_log_probs(workers, batch, cfg))
    batch.batch["advantages"] = torch.linspace(-1, 1, 8)[:, None].expand(8, 6).clone()
    lengths = batch.batch["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) > 1
    training.save_checkpoint(workers, str(tmp_path / "before"), step=0)
    updated, after, budget = {}, {}, cfg.training.actor.max_tokens_per_gpu
    for name, tokens in (("one micro-batch", budget), ("like lengths", int(lengths.max()) + 1)):
        training.load_checkpoint(workers, str(tmp_path / "before"))
        cfg.training.actor.max_tokens_per_gpu = tokens  # the longest row and a little: one row (or two short ones)
        updated[name] = training.update_actor(workers, copy.deepcopy(batch), cfg)
        after[name] = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    cfg.training.actor.max_tokens_per_gpu = budget
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"):
        assert updated["like lengths"][key] == pytest.approx(updated["one micro-batch"][key], rel=1e-5, abs=1e-7), key
    assert torch.allclose(after["like lengths"], after["one micro-batch"], atol=1e-6)
