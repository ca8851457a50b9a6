"""env.py as the loop sees it: a dataset task (get_batch) or an environment class (Environment), with every
return value checked so that a task bug reads as one line naming the fix."""

import random
from dataclasses import dataclass
from pathlib import Path

from kit.data.checks import is_finite_number, is_missing, is_prompt, is_unicode
from kit.data.daemon_threads import DaemonThreads
from kit.data.datasets import VerlFiles
from kit.errors import KitError
from kit.user_files import import_file

VAL_SEED_BASE = 2**31  # validation start states are seeds from here up; training draws seeds below it


@dataclass
class Problems:
    """One batch of a task: prompts with their ground truths, or an environment's start states."""
    prompts: list  # strings or chat message lists; for an environment, the seeds its reset() takes
    ground_truths: list  # one per prompt; None for each start state of an environment
    data_sources: list  # what the reward function receives as data_source, one per prompt
    extra_infos: list  # what it receives as extra_info (dicts)

    def repeated(self, n: int) -> "Problems":
        """Each problem n times in a row, as the rollout's rows are (extra_info dicts copied: verl writes to them)."""
        return Problems(*([value for value in values for _ in range(n)] for values in
                          (self.prompts, self.ground_truths, self.data_sources)),
                        [dict(info) for info in self.extra_infos for _ in range(n)])


class Task:
    def __init__(self, path: str, data=None):
        """env.py's task from `path`, or with data.train_files set (verl's keys) the rows of those files."""
        if data is not None and data.train_files:
            self.module, self.environment = VerlFiles(data.train_files, data.val_files, data.prompt_key), None
            self.data_source = "verl files"  # (each row names its own)
            return
        if not Path(path).is_file():
            raise KitError(f"env file '{path}' not found: set env to your task file (env.py by default)")
        self.module = import_file(path, "env file")
        self.environment = getattr(self.module, "Environment", None)  # a class: reset(seed), step(action)
        if self.environment is None and not callable(getattr(self.module, "get_batch", None)):
            raise KitError(f"{path} defines neither get_batch(size) nor an Environment class: add one (see env.py "
                           "for get_batch, examples/text_game/env.py for an Environment)")
        self.data_source = getattr(self.module, "DATA_SOURCE", self.module.__name__)
        self._seeds = random.Random(0)  # environment start states, in a reproducible order

    @property
    def has_validation(self) -> bool:
        return self.environment is not None or hasattr(self.module, "get_val_batch")

    def draw(self, size: int, held_out: bool = False) -> Problems:
        """`size` training problems, or the held-out ones (always the same for the same size)."""
        if self.environment is not None:
            seeds = range(VAL_SEED_BASE, VAL_SEED_BASE + size) if held_out else (
                self._seeds.randrange(VAL_SEED_BASE) for _ in range(size))
            return Problems(list(seeds), [None] * size, [self.data_source] * size, [{} for _ in range(size)])
        return checked_batch(self.module.get_val_batch if held_out else self.module.get_batch, size, self.data_source)

    def on_step(self, metrics: dict) -> dict:
        """env.py's optional on_step(metrics) hook, after every step (a curriculum reads train/accuracy);
        the metrics it returns are logged with the step's."""
        hook = getattr(self.module, "on_step", None)
        return dict(hook(metrics) or {}) if hook else {}

    def state_dict(self):
        """The data cursor saved in checkpoints (None when env.py keeps no state_dict)."""
        if self.environment is not None:
            return {"seeds": self._seeds.getstate()}
        return self.module.state_dict() if hasattr(self.module, "state_dict") else None

    def load_state_dict(self, state):
        if self.environment is not None:
            self._seeds.setstate(state["seeds"])
        else:
            self.module.load_state_dict(state)








def checked_batch(get_batch, size: int, data_source: str = "") -> Problems:
    """Call get_batch(size) and return its problems, or raise a KitError naming the problem. Besides prompts and
    ground_truths, a batch may carry per-prompt 'data_sources' and 'extra_infos' (as verl's parquet rows do)."""
    where = f"{get_batch.__module__}.{get_batch.__name__}({size})"
    try:
        batch = get_batch(size)
    except KitError:  # a VerlDataset's own line
        raise
    except Exception as err:  # a row it cannot parse, say
        raise KitError(f"{where} raised {type(err).__name__}: {err!s:.200}: fix it (or its data)") from None
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
        if not is_prompt(prompt):
            raise KitError(f"{where} returned the prompt {prompt!r:.200}: a prompt is a string or a list of "
                           "{'role': ..., 'content': ...} messages")
        if not is_unicode(prompt):
            raise KitError(f"{where} returned a prompt that is not valid Unicode text ({prompt!r:.100}): decode your "
                           "data as UTF-8 (errors='replace' keeps what can be read)")
    for truth in truths:
        if is_missing(truth):
            raise KitError(f"{where} returned a missing ground truth ({truth!r}): give every prompt its answer")
    data_sources = _optional_list(batch, "data_sources", [data_source] * size, str, where)
    extra_infos = _optional_list(batch, "extra_infos", [{} for _ in range(size)], dict, where)
    return Problems(prompts, truths, data_sources, extra_infos)


def _optional_list(batch: dict, key: str, default: list, kind: type, where: str) -> list:
    values = list(batch.get(key, default))
    if len(values) != len(default) or not all(isinstance(value, kind) for value in values):
        raise KitError(f"{where} returned '{key}' that is not a list of {len(default)} {kind.__name__}s: one per prompt")
    return values






def start_messages(env, seed: int, timeout: float) -> list[dict]:
    """The conversation an environment opens with: its system prompt, if any, and reset(seed)'s observation."""
    observation = _call(env.reset, seed, timeout)
    if not isinstance(observation, str):
        raise KitError(f"{type(env).__name__}.reset(seed) returned {type(observation).__name__}: it must return "
                       "the first observation as a string")
    system = getattr(env, "system_prompt", None)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": observation}]


def checked_step(env, action: str, timeout: float) -> tuple[str, float, bool, dict]:
    """env.step(action), its return value checked: (observation: str, reward: number, done: bool, info: dict)."""
    result = _call(env.step, action, timeout)
    name = f"{type(env).__name__}.step(action)"
    if not isinstance(result, tuple) or len(result) != 4:
        raise KitError(f"{name} returned {type(result).__name__}: it must return (observation, reward, done, info)")
    observation, reward, done, info = result
    if not isinstance(observation, str):
        raise KitError(f"{name} returned an observation of type {type(observation).__name__}: return a string "
                       "(an empty one when the episode is done)")
    if not is_finite_number(reward):
        raise KitError(f"{name} returned the reward {reward!r}: return a finite number (0.0 for none)")
    if done not in (True, False) or not isinstance(info, dict):
        raise KitError(f"{name} returned done={done!r}, info of type {type(info).__name__}: done must be True or "
                       "False and info a dict")
    return observation, float(reward), bool(done), info


_ENVIRONMENT_THREADS = DaemonThreads()


def _call(method, argument, timeout: float):
    """An environment method in a daemon thread; an exception, or a call still running after `timeout` seconds
    (its thread is abandoned), becomes one line naming it."""
    call = f"{type(method.__self__).__name__}.{method.__name__}({argument!r:.40})"
    future = _ENVIRONMENT_THREADS.submit(method, argument)
    try:
        return future.result(timeout)
    except Exception as err:
        if not future.done():
            raise KitError(f"{call} took longer than inference.env_timeout={timeout} s: fix the environment or "
                           "raise the timeout") from None
        raise KitError(f"{call} raised {type(err).__name__}: {err}: fix the environment") from None
