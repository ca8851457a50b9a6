"""Every config value in its valid range, checked before anything starts: a value out of range is one line naming
the key, the value and the range. RANGES is the one list of numeric ranges; config.yaml's comment for each key states
the same range (a test reads both)."""

import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from kit.data.checks import is_finite_number
from kit.errors import KitError

# key -> its valid range: "> a", ">= a", "(a, b]" or "[a, b]", or "any" finite number; "null or ..." for a key whose
# default is null. Whether a key takes integers follows its default in config.yaml (and WHOLE_NUMBERS).
RANGES = {
    "num_cpu_workers": ">= 1",
    "seed": ">= 0",
    "num_epochs": ">= 1",
    "steps_per_epoch": ">= 1",
    "batch_size": ">= 1",
    "n_generations": ">= 1",
    "save_every": ">= 0",
    "keep_last_n": ">= 1",
    "val_every": ">= 0",
    "val_size": ">= 1",
    "cpu.steps_per_epoch": ">= 1",
    "cpu.val_every": ">= 0",
    "inference.temperature": "> 0",
    "inference.top_p": "(0, 1]",
    "inference.max_response_length": ">= 1",
    "inference.max_turns": ">= 1",
    "inference.max_tokens_per_turn": "null or >= 1",
    "inference.max_calls_per_turn": ">= 1",
    "inference.tool_timeout": "> 0",
    "inference.env_timeout": "> 0",
    "inference.max_tool_output": ">= 1",
    "inference.gpu_memory_utilization": "(0, 1]",
    "inference.tensor_parallel_size": ">= 1",
    "inference.max_num_batched_tokens": ">= 1",
    "training.actor.lr": "> 0",
    "training.actor.lr_warmup_steps": ">= 0",
    "training.actor.ppo_epochs": ">= 1",
    "training.actor.mini_batch_size": "null or >= 1",
    "training.actor.grad_clip": "> 0",
    "training.actor.lora.rank": ">= 0",
    "training.actor.lora.alpha": "> 0",
    "training.actor.clip_ratio": "> 0",
    "training.actor.clip_ratio_low": "null or > 0",
    "training.actor.clip_ratio_high": "null or > 0",
    "training.actor.clip_ratio_c": "> 1",
    "training.actor.entropy_coeff": "any",
    "training.actor.kl_loss_coef": ">= 0",
    "training.critic.lr": "> 0",
    "training.critic.warmup_steps": ">= 0",
    "training.critic.cliprange_value": "> 0",
    "algorithm.gamma": "[0, 1]",
    "algorithm.lam": "[0, 1]",
    "algorithm.kl_ctrl.kl_coef": ">= 0",
    "algorithm.kl_ctrl.target_kl": "> 0",
    "algorithm.kl_ctrl.horizon": ">= 1",
    "algorithm.dro_beta": "null or > 0",
    "algorithm.clip_cov_ratio": "(0, 1]",
    "algorithm.clip_cov_lb": "any",
    "algorithm.clip_cov_ub": "any",
    "algorithm.kl_cov_ratio": "(0, 1]",
    "algorithm.ppo_kl_coef": ">= 0",
    "algorithm.rollout_is_threshold": "> 0",
    "reward.timeout": "> 0",
}
BOUND = re.compile(r"^(?P<op>>=?) (?P<low>-?[\d.]+)$")
INTERVAL = re.compile(r"^(?P<open>[(\[])(?P<low>-?[\d.]+), (?P<high>-?[\d.]+)(?P<close>[)\]])$")


def in_range(value, spec: str) -> bool:
    """Whether a finite number `value` lies in the range `spec` (RANGES' notation, without "null or")."""
    if spec == "any":
        return True
    if match := BOUND.match(spec):
        low = float(match["low"])
        return value > low or match["op"] == ">=" and value == low
    match = INTERVAL.match(spec)
    low, high = float(match["low"]), float(match["high"])
    above = value > low or match["open"] == "[" and value == low
    below = value < high or match["close"] == "]" and value == high
    return above and below


WHOLE_NUMBERS = ("inference.max_tokens_per_turn", "training.actor.mini_batch_size")  # null defaults: no type to inherit


def check_ranges(cfg: DictConfig):
    for key, spec in RANGES.items():
        value = OmegaConf.select(cfg, key)
        nullable, spec = spec.startswith("null or "), spec.removeprefix("null or ")
        if value is None and nullable:
            continue
        whole = key in WHOLE_NUMBERS or type(value) is int and spec.startswith(">=")  # counts, sizes, steps
        if not is_finite_number(value) or whole and not isinstance(value, int) or not in_range(value, spec):
            raise KitError(f"config key '{key}' must be {'null or ' if nullable else ''}{_described(spec, whole)}, "
                           f"got {value!r}")


def _described(spec: str, whole: bool) -> str:
    """A range as the error line says it: 'a positive integer', 'a number > 0', 'a number in (0, 1]'."""
    if whole and spec == ">= 1":
        return "a positive integer"
    kind = "an integer" if whole else "a number"
    return kind if spec == "any" else f"{kind} in {spec}" if spec[0] in "([" else f"{kind} {spec}"


def check_values(cfg: DictConfig):
    """Every range of RANGES, then the keys whose valid values are not a range."""
    check_ranges(cfg)
    if cfg.num_gpus != "auto" and (not isinstance(cfg.num_gpus, int) or isinstance(cfg.num_gpus, bool) or cfg.num_gpus < 0):
        raise KitError(f"config key 'num_gpus' must be auto or an integer >= 0, got {cfg.num_gpus!r}")
    tokens = cfg.training.actor.max_tokens_per_gpu
    if tokens != "auto" and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0):
        raise KitError(f"config key 'training.actor.max_tokens_per_gpu' must be auto or a positive integer, got {tokens!r}")
    if cfg.batch_size % (cfg.training.actor.mini_batch_size or cfg.batch_size):
        raise KitError(f"config key 'training.actor.mini_batch_size' must be null or a positive divisor of "
                       f"batch_size={cfg.batch_size}, got {cfg.training.actor.mini_batch_size!r}")
    liger = cfg.training.actor.liger
    if not isinstance(liger, bool) and liger != "auto":
        raise KitError(f"config key 'training.actor.liger' must be auto, true or false, got {liger!r}")
    if cfg.ray_address is not None and (not isinstance(cfg.ray_address, str) or not cfg.ray_address.strip()):
        raise KitError(f"config key 'ray_address' must be null (a local Ray of the kit's own), auto or a cluster's "
                       f"HOST:PORT, got {cfg.ray_address!r}")
    check_choice(cfg, "inference.dtype", ("bfloat16", "float16"))
    check_choice(cfg, "algorithm.rollout_is", (None, "token", "sequence"))
    if not cfg.inference.engine_log_probs and (cfg.algorithm.rollout_is or cfg.algorithm.policy_loss == "bypass_mode"):
        needs = f"rollout_is={cfg.algorithm.rollout_is}" if cfg.algorithm.rollout_is else "policy_loss=bypass_mode"
        raise KitError(f"algorithm.{needs} weighs the engine's own log-probs: set inference.engine_log_probs=true")
    check_choice(cfg, "training.actor.lr_schedule", ("constant", "cosine"))
    # verl's triton backend fails on the padded batches the kit trains on (flash-attn's remove-padding path is absent)
    check_choice(cfg, "training.actor.fused_kernels", ("none", "torch"))
    targets = cfg.training.actor.lora.target_modules
    if targets != "all-linear" and not (isinstance(targets, ListConfig) and targets
                                        and all(isinstance(name, str) and name for name in targets)):
        raise KitError(f"config key 'training.actor.lora.target_modules' must be all-linear or a list of layer names "
                       f"such as [q_proj, v_proj], got {targets!r}")
    if cfg.resume is False:  # YAML reads a bare `off` as false
        cfg.resume = "off"
    if not isinstance(cfg.resume, str) or cfg.resume not in ("auto", "off") and not Path(cfg.resume).is_dir():
        raise KitError(f"config key 'resume' must be auto, off or a checkpoint folder; {cfg.resume!r} is none of them")


def check_choice(cfg: DictConfig, key: str, choices: tuple):
    value = OmegaConf.select(cfg, key)
    if value not in choices:
        names = ", ".join("null" if choice is None else choice for choice in choices)
        raise KitError(f"config key '{key}' must be one of {names}; got {value!r}")

