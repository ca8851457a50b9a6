"""Load env.py and check what its functions return, so a task bug reads as one line naming the fix."""

import importlib.util
import math
from pathlib import Path

from kit.errors import KitError


def load_env(path: str = "env.py"):
    """The task file (config key `env`), imported as a module named after it."""
    if not Path(path).is_file():
        raise KitError(f"env file '{path}' not found: set env to your task file (env.py by default)")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(env)
    if not callable(getattr(env, "get_batch", None)):
        raise KitError(f"{path} defines no get_batch(size): add one returning {{'prompts': [...], 'ground_truths': [...]}}")
    return env


def checked_batch(get_batch, size: int) -> tuple[list, list]:
    """Call get_batch(size) and return (prompts, ground_truths), or raise a KitError naming the problem."""
    where = f"{get_batch.__module__}.{get_batch.__name__}({size})"
    batch = get_batch(size)
    if not isinstance(batch, dict) or not {"prompts", "ground_truths"} <= batch.keys():
        raise KitError(f"{where} must return a dict with 'prompts' and 'ground_truths' lists, got {type(batch).__name__}")
    prompts, truths = list(batch["prompts"]), list(batch["ground_truths"])
    if not prompts:
        raise KitError(f"{where} returned no prompts: return `size` prompts")
    if len(prompts) != len(truths):
        raise KitError(f"{where} returned {len(prompts)} prompts but {len(truths)} ground_truths: one ground truth per prompt")
    if len(prompts) != size:
        raise KitError(f"{where} returned {len(prompts)} prompts instead of {size}: return exactly `size`")
    for prompt in prompts:
        if not _is_prompt(prompt):
            raise KitError(f"{where} returned the prompt {prompt!r}: a prompt is a string or a list of "
                           "{'role': ..., 'content': ...} messages")
    for truth in truths:
        if truth is None or isinstance(truth, float) and math.isnan(truth):
            raise KitError(f"{where} returned a missing ground truth ({truth!r}): give every prompt its answer")
    return prompts, truths


def _is_prompt(prompt) -> bool:
    if isinstance(prompt, str):
        return bool(prompt)
    return isinstance(prompt, list) and bool(prompt) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt)
