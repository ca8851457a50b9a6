"""Load config.yaml with `key.sub=value` command-line overrides, and check it before anything starts."""

import difflib
import math
import sys

import yaml
from omegaconf import DictConfig, OmegaConf

from kit.errors import KitError
from kit.setup.values import check_values
from kit.user_files import read_yaml

# The kit's older key names -> verl 0.9.1's, whose `reward` section the kit now follows; the old ones still work.
RENAMED = {"reward_model.": "reward."}


def cpu_defaults(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Without a GPU, config.yaml's `cpu` keys replace those not set on the command line or in a config=FILE, so a
    CPU run shows learning within minutes. Returns them as key=value (for the one-line note), empty on GPUs."""
    if cfg.num_gpus != 0:
        return []
    given = {_current_name(key) for key, _ in _settings(overrides)}
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
        if (current := _current_name(key)) != key:
            print(f"note: config key '{key}' is now '{current}' (verl's name); the old one still works", file=sys.stderr)
        _set(base, cfg, current, value)
    for key, _ in _flatten(cfg.cpu):  # keys the CPU defaults replace must be real ones
        _check_known(cfg, key)
    check_values(cfg)
    return cfg


def _settings(overrides: list[str]) -> list[tuple[str, object]]:
    """The (key, value) pairs the command line sets, in the order they apply: the keys of config=FILE files (in
    config.yaml's shape), then the key=value overrides."""
    overrides = [_parse_override(item) for item in overrides]
    files = [pair for key, file in overrides if key == "config" for pair in _flatten(_read_yaml(file))]
    return files + [(key, value) for key, value in overrides if key != "config"]


def _current_name(key: str) -> str:
    for old, new in RENAMED.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


def _set(base: DictConfig, cfg: DictConfig, key: str, value):
    if key.startswith(FREE_FORM):  # the engine's own arguments: the engine checks them
        OmegaConf.update(cfg, key, value, merge=False)
        return
    _check_known(base, key)
    default = OmegaConf.select(base, key)
    value = _as_float(value) if isinstance(default, float) else value  # YAML reads 1e-5 as a string, 0 as an int
    _check_type(key, default, value)
    OmegaConf.update(cfg, key, value, merge=False)


def _read_yaml(path: str) -> DictConfig:
    content = read_yaml(path, "config file", "run from the kit's folder, or check config=FILE")
    if not isinstance(content, dict):
        raise KitError(f"config file '{path}' must hold `key: value` lines, not a {type(content).__name__}: "
                       "see config.yaml")
    return OmegaConf.create(content)


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
        return float(value) if isinstance(value, str) or type(value) is int else value
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