"""vLLM on its own at the kit's throughput shape: how much of the vllm engine's generation phase is vLLM's decoding,
and how much verl's server, agent-loop workers and weight sync around it (issue 18).

usage: python bench/vllm_generation.py MODEL_DIR NEW_TOKENS OUT_JSON
  vLLM's offline `LLM` in this process (no Ray, no verl), with the settings the kit gives verl's server on one GPU:
  bf16, gpu_memory_utilization 0.5, all 512 requests running at once (max_num_seqs), max_num_batched_tokens 8192.
  64 prompts x 8 samples as separate requests, as the kit sends them, sampling at temperature 1, every request
  running to NEW_TOKENS (ignore_eos). Variants of the request: the kit's (each token's log-prob, no text),
  without log-probs, and the kit's with vLLM's flat log-prob lists (fewer Python objects per token). One untimed
  warm-up batch with the kit's settings, then each variant's batch once, timed. Compare `timing/generation` of a kit-*-vllm run on the same machine.
"""

import json
import sys
import time

import torch
from transformers import AutoTokenizer
from vllm import LLM, SamplingParams

PROMPTS, SAMPLES = 64, 8
VARIANTS = {  # request settings beyond sampling
    "kit_request": {"logprobs": 0, "detokenize": False},
    "no_logprobs": {"detokenize": False},
    "flat_logprobs": {"logprobs": 0, "detokenize": False, "flat_logprobs": True},
}


def main(model_dir: str, new_tokens: int, out_path: str):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    questions = [[{"role": "user", "content": f"What is {10 + i} + {47 + 3 * i}? Answer with the number only."}]
                 for i in range(PROMPTS)]
    prompt_ids = [tokenizer.apply_chat_template(q, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                  for q in questions]
    requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids for _ in range(SAMPLES)]  # 512, n side by side
    llm = LLM(model_dir, dtype="bfloat16", gpu_memory_utilization=0.5, max_num_seqs=len(requests),
              max_num_batched_tokens=8192, max_model_len=max(map(len, prompt_ids)) + new_tokens, seed=0)
    tokens = len(requests) * new_tokens
    results = {"model": model_dir, "rows": len(requests), "new_tokens": new_tokens,
               "device": torch.cuda.get_device_name()}
    params = {name: SamplingParams(temperature=1.0, top_p=1.0, max_tokens=new_tokens, ignore_eos=True, **settings)
              for name, settings in VARIANTS.items()}
    results["warm_up_s"] = round(timed(llm, requests, params["kit_request"]), 2)  # first use: kernels, caches
    for name in VARIANTS:
        seconds = timed(llm, requests, params[name])
        results[name] = {"s": round(seconds, 3), "tokens_per_s": round(tokens / seconds),
                         "ms_per_decode_step": round(1000 * seconds / new_tokens, 2)}
        print(name, json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=1))
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


def timed(llm: LLM, requests: list[dict], params: SamplingParams) -> float:
    start = time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    assert all(len(out.outputs[0].token_ids) == params.max_tokens for out in outputs)
    return seconds


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
