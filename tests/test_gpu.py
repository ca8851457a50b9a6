"""Tests that need a GPU (CI has none: they skip there). Run them on a GPU machine:
python -m pytest -q tests/test_gpu.py"""

from contextlib import contextmanager

import pytest
import torch

from kit.patches import token_log_probs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def float32_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").cuda()


@contextmanager
def ligers_module_patches():
    """Liger replaces transformers' Llama classes and functions module-wide (models built inside see them): restored
    when the block ends."""
    from transformers.models.llama import modeling_llama

    saved = dict(vars(modeling_llama))
    try:
        yield
    finally:
        vars(modeling_llama).update(saved)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_token_log_probs_equal_the_eager_ones(dtype):
    # On a GPU kit/patches/token_log_probs compiles its two passes over large logits (torch.compile) and runs small ones
    # op by op; on the CPU they run eagerly, in chunks. Same values and gradients, for a vocabulary of Qwen2.5's
    # size: 4000 rows go through the compiled passes, 1717 rows op by op on the GPU.
    torch.manual_seed(0)
    assert 4000 * 151_936 >= token_log_probs.COMPILE_FROM_VALUES > 1717 * 151_936
    for rows in (4000, 1717):
        logits = (3 * torch.randn(rows, 151_936, device="cuda")).to(dtype).requires_grad_()
        labels, weights = torch.randint(0, 151_936, (rows,), device="cuda"), torch.randn(rows, device="cuda")
        fused = token_log_probs.logprobs_from_logits(logits, labels)
        (fused * weights).sum().backward()
        fused_grad, logits.grad = logits.grad, None
        eager = token_log_probs.logprobs_from_logits(logits.cpu().detach().requires_grad_(), labels.cpu())
        assert torch.allclose(fused.cpu(), eager, atol=1e-4)
        eager_logits = logits.detach().cpu().requires_grad_()
        (token_log_probs.logprobs_from_logits(eager_logits, labels.cpu()) * weights.cpu()).sum().backward()
        assert torch.allclose(fused_grad.float().cpu(), eager_logits.grad.float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-6)


def test_the_sampler_with_ligers_kernels_has_the_models_log_probs(tiny_model_dir, tiny_tokenizer):
    """training.actor.liger: verl patches the actor with Liger-Kernel, whose module-level patches also reach the hf
    sampler built after it (fused RMSNorm, SwiGLU, RoPE inside its CUDA graphs). The sampler's log-probs then equal a
    full forward of the patched model, and stay near the unpatched model's. float32, so only kernels differ."""
    monkey_patch = pytest.importorskip("liger_kernel.transformers.monkey_patch")
    from kit.rollout.sampler import Sampler
    from test_sampler import PROMPTS, encoded, trainer_log_probs

    with ligers_module_patches():
        monkey_patch._apply_liger_kernel_to_instance(model=float32_model(tiny_model_dir).eval(),
                                                     fused_linear_cross_entropy=False, swiglu=True)
        patched = float32_model(tiny_model_dir).eval()
        assert patched.model.norm._get_name() == "LigerRMSNorm"  # Liger patches the instances, not their classes
        sampler = Sampler(patched.config, torch.float32, torch.device("cuda"), cuda_graphs=True)
        assert type(sampler.model.model.norm).__name__ == "LigerRMSNorm"
        sampler.load_weights(patched)
        input_ids, prompt_mask = (t.cuda() for t in encoded(tiny_tokenizer, PROMPTS * 4))
        eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
        torch.manual_seed(0)
        responses, log_probs, _ = sampler.generate(input_ids, prompt_mask, 16, temperature=0.7, top_p=1.0, eos=eos,
                                                   pad=pad)
        mask = (torch.cumsum(responses == eos, -1) - (responses == eos).long() == 0).long()
        kept = mask.bool()
        expected = trainer_log_probs(patched, input_ids, prompt_mask, responses, mask, temperature=0.7)
        assert torch.allclose(log_probs[kept], expected[kept], atol=1e-4)
    reference = trainer_log_probs(float32_model(tiny_model_dir).eval(), input_ids, prompt_mask, responses, mask,
                                  temperature=0.7)
    assert torch.allclose(log_probs[kept], reference[kept], atol=1e-3)


def test_ligers_kernels_give_the_models_loss_and_gradients(tiny_model_dir):
    """training.actor.liger (issue 17's fourth goal, before it can be on by default): the actor patched as verl
    patches it (fused RMSNorm, SwiGLU and RoPE) has the unpatched model's loss and gradients; float32, so only the
    kernels differ."""
    monkey_patch = pytest.importorskip("liger_kernel.transformers.monkey_patch")

    def loss_and_gradients(model):
        ids = torch.randint(0, model.config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(0)).cuda()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {name: p.grad for name, p in model.named_parameters()}

    plain_loss, plain_gradients = loss_and_gradients(float32_model(tiny_model_dir))
    with ligers_module_patches():
        patched = float32_model(tiny_model_dir)
        monkey_patch._apply_liger_kernel_to_instance(model=patched, fused_linear_cross_entropy=False, swiglu=True)
        assert patched.model.norm._get_name() == "LigerRMSNorm"  # Liger patches the instances, not their classes
        loss, gradients = loss_and_gradients(patched)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-6)
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=1e-3, atol=1e-5, msg=name)


def test_an_offloaded_optimizers_state_is_on_the_gpu_for_its_steps_only(tmp_path):
    """kit/patches/optimizer_offload.py: verl's engine alone loads an offloaded optimizer's state as each update begins, so
    it sits on the GPU through the forward and backward (what ran a 7B run's second update out of memory).
    With the kit's change the state is in page-locked CPU memory then and afterwards, and the weights and state equal
    those of the same steps without offload."""
    from test_verl_contract import offloaded_updates, one_rank_process_group

    from kit.patches.single_rank import local_tensor

    with one_rank_process_group(tmp_path, "nccl"):
        _, verl_seen = offloaded_updates("cuda", optimizer_offload=True, kit=False)
        kit, kit_seen = offloaded_updates("cuda", optimizer_offload=True)
        plain, _ = offloaded_updates("cuda", optimizer_offload=False)
    assert verl_seen == [set(), {"cuda"}, {"cuda"}]
    assert kit_seen == [set(), {"cpu"}, {"cpu"}]
    for p, q in zip(kit.module.parameters(), plain.module.parameters()):
        assert torch.equal(local_tensor(p), local_tensor(q))
        for key, value in kit.optimizer.state[p].items():
            assert value.device.type == "cpu" and local_tensor(value).is_pinned(), key
            assert torch.equal(local_tensor(value), local_tensor(plain.optimizer.state[q][key]).cpu()), key


def test_dropping_stopped_rows_in_cuda_graphs_changes_no_rows_tokens(tiny_model_dir, tiny_tokenizer):
    """Each smaller batch replays graphs of its own over the first rows of the same buffers: every row's tokens,
    log-probs and entropy are those of a sampler that keeps every row, for the same seed."""
    from kit.rollout.sampler import Sampler
    from test_sampler import encoded

    model = float32_model(tiny_model_dir).eval()
    samplers = [Sampler(model.config, torch.float32, torch.device("cuda"), cuda_graphs=True, drop_stopped_rows=drop)
                for drop in (True, False)]
    prompts = [f"What is {a} + {3 * a % 7}?" for a in range(24)]
    input_ids, prompt_mask = (t.cuda() for t in encoded(tiny_tokenizer, prompts))
    outputs = []
    for sampler in samplers:
        sampler.load_weights(model)
        torch.manual_seed(3)
        outputs.append(sampler.generate(input_ids, prompt_mask, 192, temperature=1.0, top_p=1.0,
                                        eos=tiny_tokenizer.eos_token_id, pad=tiny_tokenizer.pad_token_id))
    assert len(samplers[0].batch_rows) > 1
    for dropped, kept in zip(*outputs):
        assert torch.equal(dropped, kept)
