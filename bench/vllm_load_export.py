"""Load a kit run's export in vLLM, as README says a user can: the merged model (hf_model/) and, after a LoRA
run, the base model with the adapter folder (hf_model/lora_adapter/) through vLLM's LoRA support.

usage: python bench/vllm_load_export.py HF_MODEL_DIR BASE_MODEL_DIR OUT_JSON
  Each variant decodes the same 8 prompts greedily for 32 tokens (bf16, no CUDA graphs). Transformers then
  scores vLLM's tokens with the merged export (teacher forcing, bf16): the mean absolute difference of the
  token log-probs says whether vLLM computed the model that was exported, not merely loaded a file. With an
  adapter, also the share of greedy tokens it has in common with the merged model's.
"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

PROMPTS = [f"Question {i}: what is {12 + 7 * i} plus {30 + i}?" for i in range(8)]
NEW_TOKENS = 32


def vllm_outputs(llm: LLM, prompt_ids: list[list[int]], lora: LoRARequest | None = None) -> list[dict]:
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, logprobs=0, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, lora_request=lora)
    return [{"ids": list(out.outputs[0].token_ids),
             "logprobs": [step[token].logprob for step, token in zip(out.outputs[0].logprobs, out.outputs[0].token_ids)]}
            for out in outputs]


def transformers_gap(model, prompt_ids: list[list[int]], outputs: list[dict]) -> float:
    """Mean |vLLM's log-prob - transformers' log-prob| of the tokens vLLM chose."""
    gaps = []
    for ids, out in zip(prompt_ids, outputs):
        tokens = torch.tensor([ids + out["ids"]], device="cuda")
        with torch.no_grad():
            logits = model(tokens).logits[0, len(ids) - 1:-1].float()  # (NEW_TOKENS, vocab)
        scored = logits.log_softmax(-1).gather(-1, tokens[0, len(ids):, None]).squeeze(-1)
        gaps.append((scored.cpu() - torch.tensor(out["logprobs"])).abs().mean().item())
    return sum(gaps) / len(gaps)


def main(export_dir: str, base_dir: str, out_path: str):
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    adapter_dir = os.path.join(export_dir, "lora_adapter")
    has_adapter = os.path.isdir(adapter_dir)
    result = {"export": export_dir, "files": sorted(os.listdir(export_dir))}

    merged_llm = LLM(export_dir, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=0.3, seed=0)
    merged = vllm_outputs(merged_llm, prompt_ids)
    del merged_llm
    if has_adapter:
        rank = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["r"]
        base_llm = LLM(base_dir, dtype="bfloat16", enforce_eager=True, gpu_memory_utilization=0.3, seed=0,
                       enable_lora=True, max_lora_rank=max(rank, 8))
        adapted = vllm_outputs(base_llm, prompt_ids, LoRARequest("export", 1, adapter_dir))
        del base_llm
        pairs = [(a, b) for m, d in zip(merged, adapted) for a, b in zip(m["ids"], d["ids"])]
        result["adapter_vs_merged_same_tokens"] = sum(a == b for a, b in pairs) / len(pairs)

    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.bfloat16).cuda().eval()
    result["merged_logprob_gap"] = transformers_gap(model, prompt_ids, merged)
    if has_adapter:
        result["adapter_logprob_gap"] = transformers_gap(model, prompt_ids, adapted)
    print(json.dumps(result, indent=1))
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
