"""The hf engine's sampler (kit/rollout/sampler.py) against plain Hugging Face `generate`, on the same GPU, model and batch.

usage: python bench/generation.py MODEL_DIR NEW_TOKENS OUT_JSON
  64 prompts x 8 samples, NEW_TOKENS new tokens each (every row runs to the limit: `generate` gets
  min_new_tokens, the sampler an eos it never meets), bf16, sampling at temperature 1. Each variant runs twice
  and the second run is timed: the first captures the CUDA graph, and fills the CUDA allocator's cache with the
  KV cache that `generate` grows every step (timed after a warm-up of 8 tokens only, `generate` made 7.6k
  tokens/s on an H200; a one-off probe on another H200 timed it on its second full call at 23k-26k).
  Variants: plain `generate`, the sampler step by step (cuda_graphs=false), the sampler with CUDA graphs, and
  with its decode step compiled as well (compile=true). Also checks how many greedy tokens each variant shares
  with the step-by-step sampler.
"""

import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kit.rollout.sampler import Sampler

PROMPTS, SAMPLES = 64, 8
SAMPLERS = {"sampler_eager": (False, False), "sampler_graphs": (True, False), "sampler_graphs_compiled": (True, True)}


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main(model_dir: str, new_tokens: int, out_path: str):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    questions = [[{"role": "user", "content": f"What is {10 + i} + {47 + 3 * i}? Answer with the number only."}]
                 for i in range(PROMPTS)]
    texts = [tokenizer.apply_chat_template(q, tokenize=False, add_generation_prompt=True) for q in questions]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to("cuda")
    input_ids = batch["input_ids"].repeat_interleave(SAMPLES, 0)  # (512, P): the n samples of a prompt side by side
    prompt_mask = batch["attention_mask"].repeat_interleave(SAMPLES, 0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tokens = len(input_ids) * new_tokens
    results = {"model": model_dir, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
               "rows": len(input_ids), "prompt_tokens": input_ids.shape[1], "new_tokens": new_tokens,
               "device": torch.cuda.get_device_name()}

    def plain():
        return model.generate(input_ids=input_ids, attention_mask=prompt_mask, do_sample=True, temperature=1.0,
                              top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad)

    for name, run in [("generate", plain)] + [
        (name, sampler_run(model, *options, input_ids, prompt_mask, new_tokens, pad)) for name, options in SAMPLERS.items()
    ]:
        torch.cuda.reset_peak_memory_stats()
        _, first = timed(run)  # a full first call: the allocator's cache then holds generate's growing KV cache
        _, seconds = timed(run)
        results[name] = {"first_s": round(first, 2), "s": round(seconds, 3), "tokens_per_s": round(tokens / seconds),
                         "ms_per_decode_step": round(1000 * seconds / new_tokens, 2),
                         "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        print(name, json.dumps(results[name]), flush=True)
    for name in SAMPLERS:
        results[name]["speedup_vs_generate"] = round(results["generate"]["s"] / results[name]["s"], 1)
    results["greedy_equals_eager"] = greedy_agrees(model, input_ids[::SAMPLES], prompt_mask[::SAMPLES], new_tokens, pad)
    print(json.dumps(results, indent=1))
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


def loaded_sampler(model, cuda_graphs: bool, compiled: bool) -> Sampler:
    sampler = Sampler(model.config, torch.bfloat16, torch.device("cuda"), cuda_graphs, compiled)
    sampler.load_weights(model)
    return sampler


def sampler_run(model, cuda_graphs: bool, compiled: bool, input_ids, prompt_mask, new_tokens: int, pad: int):
    sampler = loaded_sampler(model, cuda_graphs, compiled)
    # eos=-1: no row ever stops, as with min_new_tokens
    return lambda: sampler.generate(input_ids, prompt_mask, new_tokens, temperature=1.0, top_p=1.0, eos=-1, pad=pad)


def greedy_agrees(model, input_ids, prompt_mask, new_tokens: int, pad: int) -> dict:
    """Whether each sampler variant decodes greedily to the step-by-step sampler's tokens (the compiled step's
    fused kernels may round differently in bf16, so a late token can differ; the share of equal tokens says how far)."""
    outputs = {name: loaded_sampler(model, *options).generate(input_ids, prompt_mask, new_tokens, temperature=0.0,
                                                               top_p=1.0, eos=-1, pad=pad)[0]
               for name, options in SAMPLERS.items()}
    eager = outputs["sampler_eager"]
    return {name: round(float((tokens == eager).float().mean()), 4) for name, tokens in outputs.items() if name != "sampler_eager"}


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
