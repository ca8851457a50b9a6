"""Where the GPU time of a kit step goes, for README's "what limits it": the hf sampler's decode step and one
actor micro-batch, on a random-weight model (bench/random_model.py), each profiled with torch.profiler.

usage: python bench/profile_gpu.py MODEL_DIR OUT_JSON [NEW_TOKENS=1024] [MICRO=32]
  decode: 64 prompts x 8 samples (512 rows), a static cache for NEW_TOKENS new tokens; 32 decode steps that
          attend to the whole cache (the sampler's last window), timed step by step and as CUDA graph replays,
          each with and without torch.compile (compile=true), and profiled step by step (the kernels a graph
          replays).
  update: MICRO rows of (prompt + NEW_TOKENS) tokens, forward, the kit's token log-probs (kit/patches/token_log_probs.py),
          backward: with a padding mask (what verl's FSDP engine passes without remove-padding, so sdpa cannot
          use its flash kernel) and without one (causal flash sdpa); MFU by verl's own FLOP count (FlopsCounter).
Prints each part's ten most expensive kernels and writes all figures to OUT_JSON. Take speeds from
bench/generation.py and kernel shares from here: on an H100 this script timed the uncompiled graph variant at
22.8 ms per step after the compiled ones, against generation.py's 11.16 ms for the same shape (not explained;
measured before the sampler's windows, when every step read the whole cache).
"""

import functools
import json
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM
from verl.utils.flops_counter import FlopsCounter

from kit.rollout.sampler import Sampler
from kit.patches.token_log_probs import logprobs_from_logits

ROWS, PROMPT, STEPS = 512, 64, 32  # PROMPT: the sampler buckets prompt lengths by 64


def top_kernels(prof, per: int) -> list[dict]:
    """The ten kernels with the most GPU time, in ms per `per` (decode steps or micro-batches)."""
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events)
    rows = [{"kernel": e.key[:90], "ms": round(e.self_device_time_total / 1e3 / per, 3),
             "share": round(e.self_device_time_total / total, 3)} for e in events[:10]]
    return [{"kernel": "ALL", "ms": round(total / 1e3 / per, 3), "share": 1.0}] + rows


def seconds(fn, repeat: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


VARIANTS = {"eager": (False, False), "compiled": (False, True), "graph": (True, False), "graph_compiled": (True, True)}


def decode(model, new_tokens: int) -> dict:
    result = {"cache_length": PROMPT + new_tokens}
    for variant, (graphs, compiled) in VARIANTS.items():
        result.update(decode_variant(model, variant, graphs, compiled, new_tokens))
        torch.cuda.empty_cache()
    return result


def decode_variant(model, variant: str, graphs: bool, compiled: bool, new_tokens: int) -> dict:
    result = {}
    sampler = Sampler(model.config, torch.bfloat16, torch.device("cuda"), graphs, compiled)
    sampler.load_weights(model)
    compile_start = time.perf_counter()
    state = sampler._decoding(ROWS, PROMPT + new_tokens, new_tokens, greedy=False, top_p=False)  # (and graphs)
    state.cache.slots = state.slot
    state.cache.window = PROMPT + new_tokens  # the last window: every step reads the whole cache, as the last ones do
    state.visible.fill_(True)
    step = state.graphs[state.cache.window].replay if graphs else lambda: sampler.decode_step(state)

    def steps():
        state.step.zero_()
        state.slot.fill_(PROMPT)
        for _ in range(STEPS):
            step()
    steps()
    result[f"{variant}_first_call_s"] = round(time.perf_counter() - compile_start, 1)
    result[f"{variant}_ms_per_step"] = round(1e3 * seconds(steps, 3) / STEPS, 3)
    if not graphs:  # the kernels the graph of this variant replays
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            steps()
            torch.cuda.synchronize()
        result[f"{variant}_kernels"] = top_kernels(prof, STEPS)
    return result


def token_log_probs(model, input_ids, attention_mask, labels):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
    return logprobs_from_logits(logits, labels)  # (B, T)


def train_pass(*inputs):
    token_log_probs(*inputs).sum().backward()


def update(model, new_tokens: int, micro: int) -> dict:
    length = PROMPT + new_tokens
    lengths = [length - (i * 37) % 200 for i in range(micro)]  # uneven ends, as early eos gives
    input_ids = torch.randint(0, model.config.vocab_size, (micro, length), device="cuda")
    mask = (torch.arange(length, device="cuda")[None] < torch.tensor(lengths, device="cuda")[:, None]).long()
    labels = torch.roll(input_ids, -1, dims=1)
    counter = FlopsCounter(model.config)
    result = {"micro_batch": micro, "tokens": sum(lengths)}
    for name, attention_mask in (("padding_mask", mask), ("no_mask", None)):
        inputs = (model, input_ids, attention_mask, labels)
        train, infer = functools.partial(train_pass, *inputs), torch.no_grad()(functools.partial(token_log_probs, *inputs))
        train()
        infer()
        train_s, infer_s = seconds(train, 3), seconds(infer, 3)
        achieved, peak = counter.estimate_flops(lengths, train_s)  # fwd + bwd FLOPs per second, and the GPU's peak
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            train()
            torch.cuda.synchronize()
        result[name] = {"train_s": round(train_s, 3), "mfu": round(achieved / peak, 3), "forward_only_s": round(infer_s, 3),
                        "forward_only_mfu": round(achieved * train_s / 3 / infer_s / peak, 3),  # a forward: 1/3 of the FLOPs
                        "kernels": top_kernels(prof, 1)}
        model.zero_grad(set_to_none=True)
    return result


def main(model_dir: str, out_path: str, new_tokens: int = 1024, micro: int = 32):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    results = {"model": model_dir, "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results["decode"] = decode(model.eval(), new_tokens)
    print(json.dumps(results["decode"]), flush=True)
    results["update"] = update(model.train(), new_tokens, micro)
    print(json.dumps(results, indent=1))
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
