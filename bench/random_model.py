"""A Hugging Face model folder with random weights (torch.manual_seed(0)), saved as bf16 safetensors, with a
tokenizer, for throughput benchmarks where what the model says does not matter (bench/run.sh builds them).

  python bench/random_model.py smollm2-135m OUTDIR   # SmolLM2-135M-Instruct's own config and tokenizer (from the
                                                     # kit's embedded:smollm2 folder), weights reinitialised
  python bench/random_model.py qwen2.5-0.5b OUTDIR   # Qwen2.5-0.5B-Instruct's architecture (Qwen2Config with its
                                                     # exact values) with SmolLM2's tokenizer and chat template
  python bench/random_model.py qwen2.5-7b OUTDIR     # Qwen2.5-7B-Instruct's likewise (7.6B parameters; made on the
                                                     # GPU when there is one, so its weights differ from a CPU-made one's)

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

QWEN25_7B = {  # Qwen2.5-7B-Instruct's config.json
    **QWEN25_05B, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
}


def main(shape: str, out: Path):
    # SMOLLM2_DIR: a folder with only SmolLM2's config and tokenizer will do (bench/offline/gpu_setup.sh sets it)
    smollm2 = Path(os.environ.get("SMOLLM2_DIR") or resolve_model_path("embedded:smollm2"))
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    if shape == "smollm2-135m":
        config = AutoConfig.from_pretrained(smollm2)
    elif shape in ("qwen2.5-0.5b", "qwen2.5-7b"):
        ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
               (("bos_token_id", "<|im_start|>"), ("eos_token_id", "<|im_end|>"), ("pad_token_id", "<|im_end|>"))}
        config = Qwen2Config(**(QWEN25_7B if shape == "qwen2.5-7b" else QWEN25_05B), **ids)
    else:
        sys.exit(f"unknown shape {shape!r}: smollm2-135m, qwen2.5-0.5b or qwen2.5-7b")
    torch.manual_seed(0)
    on_gpu = shape == "qwen2.5-7b" and torch.cuda.is_available()  # 7B's random init takes minutes on a CPU
    with torch.device("cuda" if on_gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.copy(smollm2 / "generation_config.json", out)  # eos = pad = <|im_end|>, as the kit sets for SmolLM2
    print(f"{shape}: {sum(p.numel() for p in model.parameters()):,} parameters, random, bf16, in {out}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
