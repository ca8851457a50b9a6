"""Load config.yaml with `key.sub=value` command-line overrides, and check it before anything starts."""

import difflib
import importlib.util
import math
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from kit.errors import KitError
from kit.task import is_finite_number

POSITIVE_INTS = ("num_cpu_workers", "num_epochs", "steps_per_epoch", "batch_size", "n_generations", "val_size",
                 "keep_last_n", "inference.max_response_length", "training.actor.ppo_epochs", "inference.max_turns",
                 "inference.max_calls_per_turn", "inference.max_tool_output", "inference.tensor_parallel_size",
                 "inference.max_num_batched_tokens")
LIGER_VERSION = "0.8.5"  # pyproject.toml's GPU extras pin it
LIGER_PACKAGES = ("liger_kernel", "triton")  # triton comes with torch's CUDA builds
# training.actor.liger 'auto' turns Liger on from this many response tokens a step (batch_size x n_generations x
# max_response_length). Measured on an H200 (README, Measured, leases 9 and 10): steps 1.27x faster at 131,072 (the
# SmolLM2 shape) and 1.24x at 524,288 (Qwen2.5-0.5B); at the default task's 1,024 no faster, and its first step 2.7 s
# longer (most likely Triton compiling its kernels).
LIGER_AUTO_TOKENS = 65536
CPU_TOKENS = 16384  # training.actor.max_tokens_per_gpu 'auto' where no GPU's memory sizes it
# Keys whose default is null: any type passes the override check, so their values are checked here.
OPTIONAL_NUMBERS = ("training.actor.clip_ratio_low", "training.actor.clip_ratio_high", "algorithm.dro_beta")


def cpu_defaults(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Without a GPU, config.yaml's `cpu` keys replace those not set on the command line or in a config=FILE, so a
    CPU run shows learning within minutes. Returns them as key=value (for the one-line note), empty on GPUs."""
    if cfg.num_gpus != 0:
        return []
    given = {key for key, _ in _settings(overrides)}
    applied = []
    for key, value in _flatten(cfg.cpu):
        if key not in given:
            OmegaConf.update(cfg, key, value, merge=False)
            applied.append(f"{key}={value}")
    return applied


def load_config(path: str = "config.yaml", overrides: list[str] = ()) -> DictConfig:
    """config.yaml, then the keys of an optional `config=FILE` (an example's settings), then key=value overrides."""
    base = _read_yaml(path)
    cfg = base.copy()
    for key, value in _settings(overrides):
        _set(base, cfg, key, value)
    _check_values(cfg)
    return cfg


def _settings(overrides: list[str]) -> list[tuple[str, object]]:
    """The (key, value) pairs the command line sets, in the order they apply: the keys of config=FILE files (in
    config.yaml's shape), then the key=value overrides."""
    overrides = [_parse_override(item) for item in overrides]
    files = [pair for key, file in overrides if key == "config" for pair in _flatten(_read_yaml(file))]
    return files + [(key, value) for key, value in overrides if key != "config"]


def _set(base: DictConfig, cfg: DictConfig, key: str, value):
    if key.startswith(FREE_FORM):  # the engine's own arguments: the engine checks them
        OmegaConf.update(cfg, key, value, merge=False)
        return
    _check_known(base, key)
    default = OmegaConf.select(base, key)
    value = _as_float(value) if isinstance(default, float) else value  # YAML reads 1e-5 as a string
    _check_type(key, default, value)
    OmegaConf.update(cfg, key, value, merge=False)


def _read_yaml(path: str) -> DictConfig:
    content = read_yaml(path, "config file", "run from the kit's folder, or check config=FILE")
    if not isinstance(content, dict):
        raise KitError(f"config file '{path}' must hold `key: value` lines, not a {type(content).__name__}: "
                       "see config.yaml")
    return OmegaConf.create(content)


def read_yaml(path: str, what: str, fix: str):
    """A YAML file's content ({} when empty), or a one-line error naming `what` file it is; `fix` when missing."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise KitError(f"{what} '{path}' not found: {fix}") from None
    except UnicodeDecodeError:
        raise KitError(f"{what} '{path}' is not UTF-8 text: save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise KitError(f"{what} '{path}' is not valid YAML ({str(err).splitlines()[0]}): fix its syntax") from None


def _flatten(node: DictConfig, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for key, value in node.items():
        if isinstance(value, DictConfig):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _parse_override(item: str):
    if "=" not in item:
        raise KitError(f"argument '{item}' is not an override: write key=value, e.g. batch_size=4")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value else None


def _as_float(value):
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _check_known(base: DictConfig, key: str):
    if OmegaConf.select(base, key, default=_MISSING) is not _MISSING:
        return
    keys = _all_keys(base)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else "see config.yaml for the valid keys"
    raise KitError(f"unknown config key '{key}': {hint}")


_MISSING = object()


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(prefix + key)
        if isinstance(value, DictConfig):
            keys += _all_keys(value, prefix + key + ".")
    return keys


def _check_type(key: str, default, value):
    """An override must have the type of the value it replaces (an int passes for a float; null only where the
    default is null)."""
    if default is None or isinstance(default, str) and value is not None and not isinstance(value, (dict, list)):
        return
    expected = type(default)
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise KitError(f"config key '{key}' must be a finite number, got {value}")
        return
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return
    if (OmegaConf.is_list(default) or key in STRING_OR_LIST) and isinstance(value, list):
        return
    raise KitError(f"config key '{key}' must be {_type_name(default)}, got {value!r}")


STRING_OR_LIST = ("training.actor.lora.target_modules",)  # keys whose string default may become a list
FREE_FORM = "inference.engine_kwargs."  # keys under it are the engine's, not the kit's


def _type_name(value) -> str:
    if OmegaConf.is_list(value):
        return "a list"
    if OmegaConf.is_dict(value):
        return "a section of keys (set its sub-keys, e.g. key.sub=value)"
    return {bool: "true or false", int: "an integer", float: "a number"}.get(type(value), "a string")


def _check_values(cfg: DictConfig):
    for key, _ in _flatten(cfg.cpu):  # keys the CPU defaults replace must be real ones
        _check_known(cfg, key)
    for key in POSITIVE_INTS:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise KitError(f"config key '{key}' must be a positive integer, got {value!r}")
    if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
        raise KitError(f"config key 'output_dir' names the file '{cfg.output_dir}': name a folder (it is made if missing)")
    if cfg.ray_address is not None and (not isinstance(cfg.ray_address, str) or not cfg.ray_address.strip()):
        raise KitError(f"config key 'ray_address' must be null (a local Ray of the kit's own), auto or a cluster's "
                       f"HOST:PORT, got {cfg.ray_address!r}")
    if cfg.num_gpus != "auto" and (not isinstance(cfg.num_gpus, int) or cfg.num_gpus < 0):
        raise KitError(f"config key 'num_gpus' must be auto or an integer >= 0, got {cfg.num_gpus!r}")
    tokens = cfg.training.actor.max_tokens_per_gpu
    if tokens != "auto" and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0):
        raise KitError(f"config key 'training.actor.max_tokens_per_gpu' must be auto or a positive integer, got {tokens!r}")
    liger = cfg.training.actor.liger
    if not isinstance(liger, bool) and liger != "auto":
        raise KitError(f"config key 'training.actor.liger' must be auto, true or false, got {liger!r}")
    for key in ("inference.top_p", "inference.gpu_memory_utilization"):
        if not 0 < OmegaConf.select(cfg, key) <= 1:
            raise KitError(f"config key '{key}' must be in (0, 1], got {OmegaConf.select(cfg, key)}")
    if cfg.inference.temperature <= 0:
        raise KitError(f"config key 'inference.temperature' must be > 0 for training rollouts, got {cfg.inference.temperature}")
    for key in ("save_every", "val_every", "training.actor.lr_warmup_steps", "training.critic.warmup_steps"):
        if OmegaConf.select(cfg, key) < 0:
            raise KitError(f"config key '{key}' must be >= 0, got {OmegaConf.select(cfg, key)}")
    for key in OPTIONAL_NUMBERS:
        value = OmegaConf.select(cfg, key)
        if value is not None and not is_finite_number(value):
            raise KitError(f"config key '{key}' must be a number or null, got {value!r}")
    per_turn = cfg.inference.max_tokens_per_turn
    if per_turn is not None and (not isinstance(per_turn, int) or isinstance(per_turn, bool) or per_turn <= 0):
        raise KitError(f"config key 'inference.max_tokens_per_turn' must be null or a positive integer, got {per_turn!r}")
    mini = cfg.training.actor.mini_batch_size
    if mini is not None and (not isinstance(mini, int) or isinstance(mini, bool) or mini <= 0 or cfg.batch_size % mini):
        raise KitError(f"config key 'training.actor.mini_batch_size' must be null or a positive divisor of "
                       f"batch_size={cfg.batch_size}, got {mini!r}")
    for key in ("inference.tool_timeout", "inference.env_timeout", "reward_model.timeout"):
        if OmegaConf.select(cfg, key) <= 0:
            raise KitError(f"config key '{key}' must be > 0 seconds, got {OmegaConf.select(cfg, key)}")
    _check_choice(cfg, "inference.dtype", ("bfloat16", "float16"))
    _check_choice(cfg, "algorithm.rollout_is", (None, "token", "sequence"))
    if not cfg.inference.engine_log_probs and (cfg.algorithm.rollout_is or cfg.algorithm.policy_loss == "bypass_mode"):
        needs = f"rollout_is={cfg.algorithm.rollout_is}" if cfg.algorithm.rollout_is else "policy_loss=bypass_mode"
        raise KitError(f"algorithm.{needs} weighs the engine's own log-probs: set inference.engine_log_probs=true")
    if cfg.algorithm.rollout_is_threshold <= 0:
        raise KitError(f"config key 'algorithm.rollout_is_threshold' must be > 0, got {cfg.algorithm.rollout_is_threshold}")
    _check_choice(cfg, "training.actor.lr_schedule", ("constant", "cosine"))
    # verl's triton backend fails on the padded batches the kit trains on (flash-attn's remove-padding path is absent)
    _check_choice(cfg, "training.actor.fused_kernels", ("none", "torch"))
    _check_lora(cfg.training.actor.lora)
    if cfg.resume is False:  # YAML reads a bare `off` as false
        cfg.resume = "off"
    resume = cfg.resume
    if not isinstance(resume, str) or resume not in ("auto", "off") and not Path(resume).is_dir():
        raise KitError(f"config key 'resume' must be auto, off or a checkpoint folder; {resume!r} is none of them")


def _check_lora(lora: DictConfig):
    if not isinstance(lora.rank, int) or isinstance(lora.rank, bool) or lora.rank < 0:
        raise KitError(f"config key 'training.actor.lora.rank' must be an integer >= 0 (0 = full fine-tuning), got {lora.rank!r}")
    if not is_finite_number(lora.alpha) or lora.alpha <= 0:
        raise KitError(f"config key 'training.actor.lora.alpha' must be a number > 0, got {lora.alpha!r}")
    targets = lora.target_modules
    if targets != "all-linear" and not (isinstance(targets, ListConfig) and targets
                                        and all(isinstance(name, str) and name for name in targets)):
        raise KitError(f"config key 'training.actor.lora.target_modules' must be all-linear or a list of layer names "
                       f"such as [q_proj, v_proj], got {targets!r}")


def _worker_layout(cfg: DictConfig, gpu_nodes: list[int], nodes: int) -> list[int]:
    """Workers per node: all GPUs of as many nodes as num_gpus fills (each node alike), or the CPU workers spread
    evenly over every node."""
    if cfg.num_gpus == 0:
        if cfg.num_cpu_workers % nodes:
            raise KitError(f"num_cpu_workers={cfg.num_cpu_workers} must divide by the Ray cluster's {nodes} nodes: the "
                           "kit puts the same number of CPU workers on each")
        return [cfg.num_cpu_workers // nodes] * nodes
    if len(set(gpu_nodes)) > 1:
        raise KitError(f"the Ray cluster's nodes have unequal GPU counts ({', '.join(map(str, gpu_nodes))}): FSDP and "
                       "the engines place the same number on each node, so start every node with the same number "
                       "(ray start --num-gpus=N)")
    per_node = gpu_nodes[0]
    if cfg.num_gpus > per_node and cfg.num_gpus % per_node:
        raise KitError(f"num_gpus={cfg.num_gpus} must fill whole nodes of {per_node} GPUs (or fit in one): use a "
                       f"multiple of {per_node} or num_gpus=auto")
    return [min(cfg.num_gpus, per_node)] * max(1, cfg.num_gpus // per_node)


def _resolve_liger(cfg: DictConfig):
    """'auto' is on where Liger pays and can run: GPUs, the packages installed, LIGER_AUTO_TOKENS response tokens a
    step, and inference.compile off. true is checked instead: Liger's kernels are Triton's (GPUs only, the packages
    installed), and inference.compile fuses the same small kernels of the sampler its own way; the two together are
    untested, so refused."""
    actor = cfg.training.actor
    if actor.liger == "auto":
        tokens = cfg.batch_size * cfg.n_generations * cfg.inference.max_response_length
        actor.liger = (cfg.num_gpus > 0 and tokens >= LIGER_AUTO_TOKENS and not cfg.inference.compile
                       and all(importlib.util.find_spec(package) for package in LIGER_PACKAGES))
        return
    if not actor.liger:
        return
    if cfg.num_gpus == 0:
        raise KitError("training.actor.liger runs Triton kernels, which need GPUs: set training.actor.liger=false on CPU")
    for package in LIGER_PACKAGES:
        if importlib.util.find_spec(package) is None:
            raise KitError(f"training.actor.liger needs liger-kernel and triton; {package} is not installed: pip install "
                           f"liger-kernel=={LIGER_VERSION} (in .[vllm] and .[sglang]), or set training.actor.liger=false")
    if cfg.inference.compile:
        raise KitError("training.actor.liger and inference.compile both fuse the sampler's small kernels, and the "
                       "two together are untested: set one of them false")


def _check_choice(cfg: DictConfig, key: str, choices: tuple):
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        names = ", ".join("null" if choice is None else choice for choice in choices)
        raise KitError(f"config key '{key}' must be one of {names}; got {value!r}")


def resolve_hardware(cfg: DictConfig, node_gpus: list[int]):
    """Fix num_gpus ('auto' = all), num_workers (one per GPU, or num_cpu_workers on CPU) and worker_layout (workers
    per node, for verl's resource pool) from the GPUs of each node: one entry locally, one per node on a cluster.
    On CPU workers training.actor.max_tokens_per_gpu 'auto' is CPU_TOKENS; on GPUs the memory estimate sizes it
    once the model's config is read (kit/memory.size_micro_batches)."""
    gpu_nodes = [gpus for gpus in node_gpus if gpus > 0]
    total = sum(gpu_nodes)
    where = "are visible" if len(node_gpus) == 1 else f"are in the Ray cluster's {len(node_gpus)} nodes"
    if cfg.num_gpus == "auto":
        cfg.num_gpus = total
    if cfg.num_gpus > total:
        raise KitError(f"num_gpus={cfg.num_gpus} but {total} GPU(s) {where}: lower num_gpus or use num_gpus=auto")
    if cfg.num_gpus == 0 and cfg.training.actor.max_tokens_per_gpu == "auto":
        cfg.training.actor.max_tokens_per_gpu = CPU_TOKENS
    _resolve_liger(cfg)
    cfg.worker_layout = _worker_layout(cfg, gpu_nodes, len(node_gpus))
    cfg.num_workers = sum(cfg.worker_layout)
    tensor_parallel = cfg.inference.tensor_parallel_size
    if cfg.inference.engine != "hf" and cfg.worker_layout[0] % tensor_parallel:
        raise KitError(f"inference.tensor_parallel_size={tensor_parallel} must divide the {cfg.worker_layout[0]} GPUs "
                       "each node trains on: each engine replica takes that many GPUs of one node")
    rollouts = (cfg.training.actor.mini_batch_size or cfg.batch_size) * cfg.n_generations
    if rollouts % cfg.num_workers or cfg.val_size % cfg.num_workers:
        raise KitError(
            f"batch_size (or training.actor.mini_batch_size) x n_generations = {rollouts} and val_size = "
            f"{cfg.val_size} must both divide by the {cfg.num_workers} workers: change them or the worker count"
        )
