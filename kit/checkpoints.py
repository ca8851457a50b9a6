"""Checkpoints a run resumes from exactly: verl's worker checkpoints plus the loop's own state.

A checkpoint is output_dir/checkpoints/global_step_N/ with actor/ (and critic/) from verl's checkpoint
manager and loop_state.pt: the step, the KL controller, env.py's data cursor, the driver's RNG states, the
config that must match on resume, and the size of every file. It is written under a hidden name and
renamed into place only when complete, so a crash mid-save never leaves a folder that looks valid; a folder
whose files do not match its manifest (a copy cut short, a truncated file) is skipped with a warning.
"""

import os
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from kit.errors import KitError

STATE_FILE = "loop_state.pt"
PREFIX = "global_step_"
# Config keys a checkpoint cannot survive a change of: the models and how their weights are sharded.
MUST_MATCH = ("model_path", "training.critic.model_path", "num_workers", "training.actor.strategy",
              "training.critic.strategy")


def checkpoint_root(cfg) -> Path:
    return Path(cfg.output_dir) / "checkpoints"


@contextmanager
def writing(cfg, step: int, loop_state: dict):
    """Yield a scratch folder for the workers' checkpoints; then add the loop state and publish it as
    global_step_<step>, and delete all but the newest keep_last_n checkpoints."""
    root = checkpoint_root(cfg)
    scratch, final = root / f".{PREFIX}{step}.partial", root / f"{PREFIX}{step}"
    for leftover in root.glob(f".{PREFIX}*.partial"):  # from a run killed mid-save
        shutil.rmtree(leftover)
    try:
        scratch.mkdir(parents=True)
        yield str(scratch)
        state = {**loop_state, "step": step, "rng": _rng_states(), "config": _must_match(cfg), "files": _manifest(scratch)}
        torch.save(state, scratch / STATE_FILE)
    except OSError as err:  # a full disk, a quota, a lost mount (also raised inside a worker)
        shutil.rmtree(scratch, ignore_errors=True)
        previous = _scan(root)[0]
        raise KitError(f"could not write the step-{step} checkpoint in {root} ({getattr(err, 'strerror', None) or err}): "
                       f"free space there and run the same command to resume from "
                       f"{previous[-1].name if previous else 'the start'}") from None
    shutil.rmtree(final, ignore_errors=True)
    os.rename(scratch, final)  # atomic: the checkpoint appears whole or not at all
    complete, broken = _scan(root)
    for old in complete[:-cfg.keep_last_n] + broken:  # broken: e.g. a prune the previous run was killed in
        shutil.rmtree(old)


def find(cfg) -> Path | None:
    """The checkpoint to resume from: None for resume=off or a fresh output_dir."""
    if cfg.resume == "off":
        return None
    if cfg.resume != "auto":
        folder = Path(cfg.resume)
        if not is_complete(folder):
            raise KitError(f"resume={cfg.resume} is not a complete checkpoint (no {STATE_FILE}, or its files do not "
                           "match it): point resume at a global_step_N folder, or use resume=auto")
        return folder
    complete, broken = _scan(checkpoint_root(cfg))
    for folder in broken:
        print(f"warning: checkpoint {folder} is incomplete or corrupt: skipped", file=sys.stderr)
    return complete[-1] if complete else None


def _scan(root: Path) -> tuple[list[Path], list[Path]]:
    """(complete, incomplete) checkpoint folders under root, each oldest first."""
    def step(folder: Path) -> int:
        suffix = folder.name[len(PREFIX):]
        return int(suffix) if suffix.isdigit() else -1

    complete, broken = [], []
    for folder in sorted(root.glob(f"{PREFIX}*"), key=step):
        (complete if is_complete(folder) else broken).append(folder)
    return complete, broken


def is_complete(folder: Path) -> bool:
    try:
        state = load_state(folder)
    except Exception:  # missing, truncated or not a checkpoint at all
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in state["files"].items())


def load_state(folder: Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, weights_only=False)


def check_matches(state: dict, cfg, folder: Path, critic: bool):
    """A clear error when the run's config differs from the checkpoint's in a way weights cannot follow."""
    if critic and not (folder / "critic").is_dir():
        raise KitError(f"checkpoint {folder} has no critic, but algorithm.advantage_estimator=gae trains one: resume "
                       "with the estimator it was made with, or resume=off (or a new output_dir) to start over")
    for key, saved in state["config"].items():
        now = OmegaConf.select(cfg, key)
        if now != saved:
            raise KitError(f"checkpoint {folder} was made with {key}={saved!r}, this run has {key}={now!r}: "
                           f"set {key}={saved!r} to resume, or resume=off (or a new output_dir) to start over")


def restore_rng(state: dict):
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])


def _rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _must_match(cfg) -> dict:
    return {key: OmegaConf.select(cfg, key) for key in MUST_MATCH}


def _manifest(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}
