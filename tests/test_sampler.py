"""The hf engine's sampler (kit/rollout/sampler.py) against Hugging Face's own forward and `generate`, on CPU. Its CUDA
graph path replays the same decode step; bench/generation.py checks on a GPU that the graph and eager steps agree."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from kit.rollout.decoding import WINDOW, windows
from kit.rollout.sampler import Sampler, top_p_filter

PROMPTS = ["What is 2 + 3?", "12 + 30 =", "What is 45 + 17? It is"]


@pytest.fixture(scope="module")
def model_and_sampler(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    sampler = Sampler(model.config, torch.float32, torch.device("cpu"), cuda_graphs=True)  # no GPU: step by step
    sampler.load_weights(model)
    return model, sampler


def encoded(tokenizer, prompts=PROMPTS):
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    return batch["input_ids"], batch["attention_mask"]  # (B, P), left-padded


def trainer_log_probs(model, input_ids, prompt_mask, responses, response_mask, temperature=1.0, entropy=False):
    """Log-probs of the responses from one full forward over prompt + response, as a trainer computes them (and
    with entropy=True, each position's entropy too)."""
    attention_mask = torch.cat([prompt_mask, response_mask], 1)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(torch.cat([input_ids, responses], 1), attention_mask=attention_mask, position_ids=positions).logits
    logits = logits[:, input_ids.shape[1] - 1:-1].float() / temperature  # (B, R, V): the logits that chose each token
    log_probs = torch.log_softmax(logits, -1)  # (B, R, V)
    picked = log_probs.gather(-1, responses[:, :, None]).squeeze(-1)
    return (picked, -(log_probs.exp() * log_probs).sum(-1)) if entropy else picked


def test_greedy_equals_hugging_face_generate(model_and_sampler, tiny_tokenizer):
    model, sampler = model_and_sampler
    input_ids, prompt_mask = encoded(tiny_tokenizer)
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    with torch.no_grad():
        expected = model.generate(input_ids, attention_mask=prompt_mask, do_sample=False, top_p=None, top_k=None,
                                  max_new_tokens=10, eos_token_id=eos, pad_token_id=pad)[:, input_ids.shape[1]:]
    responses, _, _ = sampler.generate(input_ids, prompt_mask, 10, temperature=0.0, top_p=1.0, eos=eos, pad=pad)
    assert torch.equal(responses[:, :expected.shape[1]], expected)


def test_sampled_log_probs_equal_the_trainers_and_rows_stop_at_their_eos(model_and_sampler, tiny_tokenizer):
    model, sampler = model_and_sampler
    input_ids, prompt_mask = encoded(tiny_tokenizer, PROMPTS * 4)
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    torch.manual_seed(0)
    responses, log_probs, entropy = sampler.generate(input_ids, prompt_mask, 16, temperature=0.7, top_p=1.0, eos=eos,
                                                     pad=pad)
    stopped = (responses == eos).any(-1)
    assert stopped.any() and not stopped.all()  # some rows stop early, others run to the limit
    for row in responses[stopped]:  # after its eos a row holds only pad
        after = row[(row == eos).nonzero()[0, 0] + 1:]
        assert (after == pad).all()
    response_mask = (torch.cumsum(responses == eos, -1) - (responses == eos).long() == 0).long()  # up to and with eos
    expected, expected_entropy = trainer_log_probs(model, input_ids, prompt_mask, responses, response_mask,
                                                   temperature=0.7, entropy=True)
    kept = response_mask.bool()
    assert torch.allclose(log_probs[kept], expected[kept], atol=1e-4)
    assert torch.allclose(entropy[kept], expected_entropy[kept], atol=1e-4)  # what train/entropy reports on-policy
    assert (log_probs[~kept] == 0).all() and (entropy[~kept] == 0).all()


def test_samples_follow_the_models_distribution_and_the_seed(model_and_sampler, tiny_tokenizer):
    model, sampler = model_and_sampler
    input_ids, prompt_mask = encoded(tiny_tokenizer, PROMPTS[:1] * 4000)  # one prompt, 4000 rows: n samples in one batch
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    torch.manual_seed(1)
    first, _, _ = sampler.generate(input_ids, prompt_mask, 1, temperature=0.5, top_p=1.0, eos=eos, pad=pad)
    with torch.no_grad():
        logits = model(input_ids[:1], attention_mask=prompt_mask[:1]).logits[0, -1].float()
    probs = torch.softmax(logits / 0.5, -1)  # (V,)

    def distance(tokens):  # total variation between the tokens' frequencies and the model's probabilities
        return 0.5 * (torch.bincount(tokens, minlength=probs.numel()).float() / len(tokens) - probs).abs().sum()

    reference = distance(torch.multinomial(probs, len(first), replacement=True))  # what sampling noise alone gives
    assert distance(first[:, 0]) < 1.5 * reference + 0.01
    torch.manual_seed(1)
    again, _, _ = sampler.generate(input_ids, prompt_mask, 1, temperature=0.5, top_p=1.0, eos=eos, pad=pad)
    assert torch.equal(first, again)


def test_a_long_response_reads_each_window_of_the_cache_right(model_and_sampler, tiny_tokenizer):
    """A decode step attends to the cache up to the next multiple of WINDOW past its position: the log-probs of
    responses that cross several windows equal a full forward's."""
    model, sampler = model_and_sampler
    input_ids, prompt_mask = encoded(tiny_tokenizer)
    new_tokens = 2 * WINDOW + 10
    assert windows(64 + new_tokens) == [WINDOW, 2 * WINDOW, 3 * WINDOW, 64 + new_tokens]
    responses, log_probs, _ = sampler.generate(input_ids, prompt_mask, new_tokens, temperature=1.0, top_p=1.0, eos=-1,
                                            pad=tiny_tokenizer.pad_token_id)  # eos=-1: every row runs to the end
    expected = trainer_log_probs(model, input_ids, prompt_mask, responses, torch.ones_like(responses))
    assert torch.allclose(log_probs, expected, atol=1e-4)


def test_verls_fused_forward_leaves_the_sampler_alone(model_and_sampler, tiny_tokenizer):
    """verl's fused kernels replace the model class's forward in the worker (the sampler's copy is of that class);
    the sampler goes through the decoder and LM head itself and samples exactly as before."""
    from verl.models.transformers.monkey_patch import patch_forward_with_backends

    model, sampler = model_and_sampler
    input_ids, prompt_mask = encoded(tiny_tokenizer)
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    torch.manual_seed(3)
    before = sampler.generate(input_ids, prompt_mask, 8, temperature=1.0, top_p=1.0, eos=eos, pad=pad)
    forward = type(model).forward
    patch_forward_with_backends(model, use_fused_kernels=True, fused_kernels_backend="torch")
    try:
        assert type(sampler.model).forward is not forward  # the class's forward is verl's now
        torch.manual_seed(3)
        after = sampler.generate(input_ids, prompt_mask, 8, temperature=1.0, top_p=1.0, eos=eos, pad=pad)
    finally:
        type(model).forward = forward
    for old, new in zip(before, after):
        assert torch.equal(old, new)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.05, 0.9, 0.03, 0.02]])
    kept = top_p_filter(probs, torch.tensor(0.75))
    assert torch.equal(kept > 0, torch.tensor([[True, False, True, False], [False, True, False, False]]))
    assert torch.equal(kept[kept > 0], probs[kept > 0])  # kept tokens keep their probability (sampling renormalises)


def perturbed_model(model_dir):
    """The tiny model with every weight moved a little: a policy after an update."""
    other = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in other.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return other


def test_new_weights_reach_the_sampler(model_and_sampler, tiny_tokenizer, tiny_model_dir):
    model, sampler = model_and_sampler
    other = perturbed_model(tiny_model_dir)
    input_ids, prompt_mask = encoded(tiny_tokenizer)
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    sampler.load_weights(other)
    _, log_probs, _ = sampler.generate(input_ids, prompt_mask, 6, temperature=1.0, top_p=1.0, eos=eos, pad=pad)
    sampler.load_weights(model)  # the module's fixture back as it was
    assert not torch.allclose(log_probs, sampler.generate(input_ids, prompt_mask, 6, 1.0, 1.0, eos, pad)[1])


def test_a_compiled_decode_step_samples_the_current_weights_exactly(model_and_sampler, tiny_tokenizer, tiny_model_dir):
    model, _ = model_and_sampler
    sampler = Sampler(model.config, torch.float32, torch.device("cpu"), cuda_graphs=True, compiled=True)
    sampler.load_weights(model)
    input_ids, prompt_mask = encoded(tiny_tokenizer, PROMPTS * 2)
    pad, new_tokens = tiny_tokenizer.pad_token_id, WINDOW + 10  # into a second window: compiled again, symbolically
    sampler.generate(input_ids, prompt_mask, new_tokens, temperature=1.0, top_p=1.0, eos=-1, pad=pad)  # compiles
    other = perturbed_model(tiny_model_dir)
    sampler.load_weights(other)  # after the compile: the compiled step must read the new weights
    responses, log_probs, _ = sampler.generate(input_ids, prompt_mask, new_tokens, temperature=1.0, top_p=1.0, eos=-1,
                                            pad=pad)
    expected = trainer_log_probs(other, input_ids, prompt_mask, responses, torch.ones_like(responses))
    assert torch.allclose(log_probs, expected, atol=1e-4)


def test_a_dropped_sampler_is_freed_at_once(model_and_sampler, tiny_tokenizer):
    # inference.free_sampler drops the sampler before each update and needs its memory back then, not whenever the
    # cycle collector runs. (A 7B run with free_sampler ran out of memory in its first update with 133 GB in use,
    # about its need with the sampler's 47 GB still held: likely so, as the sampler held its own bound method.)
    import gc
    import weakref

    model, _ = model_and_sampler
    sampler = Sampler(model.config, torch.float32, torch.device("cpu"), cuda_graphs=True)
    sampler.load_weights(model)
    input_ids, prompt_mask = encoded(tiny_tokenizer)
    sampler.generate(input_ids, prompt_mask, 4, temperature=1.0, top_p=1.0, eos=tiny_tokenizer.eos_token_id,
                     pad=tiny_tokenizer.pad_token_id)  # its per-shape buffers made
    dropped = weakref.ref(sampler)
    gc.disable()
    try:
        del sampler
        assert dropped() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.8, 0.9)])
def test_dropping_stopped_rows_changes_no_rows_tokens_log_probs_or_entropy(model_and_sampler, tiny_tokenizer,
                                                                           temperature, top_p):
    """The rows still running move into smaller batches as others stop (kit/rollout/sampler.py); each row's tokens,
    log-probs and entropy are what a sampler that keeps every row gives it, for the same seed."""
    model, dropping = model_and_sampler
    keeping = Sampler(model.config, torch.float32, torch.device("cpu"), cuda_graphs=False, drop_stopped_rows=False)
    keeping.load_weights(model)
    prompts = [f"What is {a} + {3 * a % 7}?" for a in range(24)]  # 24 rows: batches of 24, 12 and 6
    input_ids, prompt_mask = encoded(tiny_tokenizer, prompts)
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    outputs = []
    for sampler in (dropping, keeping):
        torch.manual_seed(3)
        outputs.append(sampler.generate(input_ids, prompt_mask, 192, temperature=temperature, top_p=top_p, eos=eos,
                                        pad=pad))
    assert len(dropping.batch_rows) > 1 and dropping.batch_rows[0] == 24 and keeping.batch_rows == [24]
    for dropped, kept in zip(*outputs):
        assert torch.equal(dropped, kept)
    responses = outputs[0][0]
    assert (responses == eos).any(-1).sum() >= 12 and not (responses == eos).any(-1).all()  # some ran to the limit
