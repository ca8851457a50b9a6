"""A Hugging Face model folder with random weights (torch.manual_seed(0)), saved as bf16 safetensors, with a
tokenizer, for throughput benchmarks where what the model says does not matter (bench/run.sh builds them).

  python bench/random_model.py smollm2-135m OUTDIR   # SmolLM2-135M-Instruct's own config and tokenizer (from the
                                                     # kit's embedded:smollm2 folder), weights reinitialised
  python bench/random_model.py qwen2.5-0.5b OUTDIR   # Qwen2.5-0.5B-Instruct's architecture (Qwen2Config with its
                                                     # exact values) with SmolLM2's tokenizer and chat template
  python bench/random_model.py qwen2.5-7b OUTDIR     # Qwen2.5-7B-Instruct's likewise (7.6B parameters; made on the
                                                     # GPU when there is one, so its weights differ from a CPU-made one's)
  python bench/random_model.py qwen2.5-0.5b-tail4096 OUTDIR   # the long-tail workload: responses end by themselves
                                                     # (also qwen2.5-1.5b-tail*, qwen2.5-7b-tail*; any maximum length)

A random model samples tokens near-uniformly over its vocabulary and so never ends a response by itself: every row
runs to max_response_length. A -tailL model ends them at lengths drawn from a geometric distribution of mean L/4
(truncated at L: 2% reach it; p10, p50 and p90 about 0.03 L, 0.17 L and 0.58 L), the same for every engine, since the
ending is in the weights: a constant vector a*v is added to every token's input embedding, so the last hidden
state always has a component along v (cos about 0.3 after 24 layers), and the end-of-sequence token's output row
gets b*v, which raises that token's logit alone by a near-constant amount; b is fitted on a forward pass so that the
mean end probability per token is 4/L. (With tied embeddings the a*v added to every output row shifts every logit
alike, which softmax ignores.)

The qwen shape borrows SmolLM2's tokenizer (the real one needs a download): its 49,152 ids all fit in
Qwen's 151,936-row vocabulary, so prompts embed the same; a random model also samples ids above 49,151,
which that tokenizer has no text for and decodes as nothing. Prints the parameter count.
"""

import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for kit
from kit.setup.models import resolve_model_path  # noqa: E402

QWEN25_05B = {  # Qwen2.5-0.5B-Instruct's config.json
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu", "use_sliding_window": False,
}

QWEN25_15B = {  # Qwen2.5-1.5B-Instruct's config.json
    **QWEN25_05B, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
}

QWEN25_7B = {  # Qwen2.5-7B-Instruct's config.json
    **QWEN25_05B, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
}


QWEN_SHAPES = {"qwen2.5-0.5b": QWEN25_05B, "qwen2.5-1.5b": QWEN25_15B, "qwen2.5-7b": QWEN25_7B}
SHIFT = 20.0  # a: the constant added to every input embedding along v (it dominates the layers' random output there)
FIT_TOKENS = (4, 256)  # the forward pass b is fitted on: rows x tokens of random prompt ids


def main(name: str, out: Path):
    shape, _, tail = name.partition("-tail")
    # SMOLLM2_DIR: a folder with only SmolLM2's config and tokenizer will do (bench/offline/gpu_setup.sh sets it)
    smollm2 = Path(os.environ.get("SMOLLM2_DIR") or resolve_model_path("embedded:smollm2"))
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    if shape == "smollm2-135m":
        config = AutoConfig.from_pretrained(smollm2)
    elif shape in QWEN_SHAPES:
        ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in
               (("bos_token_id", "<|im_start|>"), ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<|im_end|>"))}
        config = Qwen2Config(**QWEN_SHAPES[shape], **ids)
    else:
        sys.exit(f"unknown shape {shape!r}: smollm2-135m, {', '.join(QWEN_SHAPES)}, each with -tailL or not")
    if tail and not tail.isdigit():
        sys.exit(f"{name}: -tail takes the maximum response length, e.g. {shape}-tail4096")
    torch.manual_seed(0)
    on_gpu = shape != "smollm2-135m" and torch.cuda.is_available()  # a large random init takes minutes on a CPU
    with torch.device("cuda" if on_gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if tail:
        end_at_lengths_of_mean(model, config.eos_token_id, mean=int(tail) / 4)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.copy(smollm2 / "generation_config.json", out)  # eos = pad = <|im_end|>, as the kit sets for SmolLM2
    print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, random, bf16, in {out}")


@torch.no_grad()
def end_at_lengths_of_mean(model, eos: int, mean: float):
    """Bake a constant end-of-sequence probability of 1/mean per token into the weights (the module's docstring)."""
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    v = torch.randn(embed.shape[1], generator=torch.Generator().manual_seed(1)).to(embed)
    v /= v.norm()
    embed += SHIFT * v  # (V, H): every token's input, and with tied weights every output row alike
    ids = torch.randint(0, 49152, FIT_TOKENS, generator=torch.Generator().manual_seed(2)).to(embed.device)
    hidden = model.model(ids).last_hidden_state.float()  # (rows, tokens, H), after the final norm
    logits = hidden @ head.float().T  # (rows, tokens, V)
    others = torch.logsumexp(torch.cat([logits[..., :eos], logits[..., eos + 1:]], -1), -1)
    along_v = hidden @ v.float()  # (rows, tokens): near-constant
    # p(end) = 1 / (1 + exp(others - z_eos - b * along_v)) = 1/mean  =>  b = (log(1/(mean-1)) + others - z_eos) / along_v
    b = ((torch.log(torch.tensor(1 / (mean - 1))) + others - logits[..., eos]) / along_v).mean()
    head[eos] += (b * v).to(head.dtype)
    end = torch.sigmoid(logits[..., eos] + b * along_v - others)
    print(f"end-of-sequence probability per token {end.mean():.2e} (target {1 / mean:.2e}; p10 "
          f"{end.quantile(0.1):.2e}, p90 {end.quantile(0.9):.2e}): mean length about {1 / end.mean():.0f}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
