"""Checkpoints a run resumes from exactly: verl's worker checkpoints plus the loop's own state.

A checkpoint is output_dir/checkpoints/global_step_N/ with actor/ (and critic/) from verl's checkpoint
manager and loop_state.pt: the step, the KL controller, env.py's data cursor, the driver's RNG states, the
config that must match on resume, and the size of every file. It is written under a hidden name and
renamed into place only when complete, so a crash mid-save never leaves a folder that looks valid; a folder
whose files do not match its manifest (a copy cut short, a truncated file) is skipped with a warning.

Checkpoints hold optimizer state and verl loads its files with torch.load(weights_only=False), which runs any
code a crafted file carries: so they are private to their user (folders 0o700, files 0o600), a resume refuses
one that another user could have written, and loop_state.pt holds only what torch.load(weights_only=True) reads.
"""

import io
import os
import pickle
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
    _check_plain(loop_state)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch.mkdir(mode=0o700)
        yield str(scratch)
        state = {**loop_state, "step": step, "rng": _rng_states(), "config": _must_match(cfg), "files": _manifest(scratch)}
        torch.save(state, scratch / STATE_FILE)
        limit_permissions(scratch, folders=0o700, files=0o600)
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
        return _private(folder)
    complete, broken = _scan(checkpoint_root(cfg))
    for folder in broken:
        print(f"warning: checkpoint {folder} is incomplete or corrupt: skipped", file=sys.stderr)
    return _private(complete[-1]) if complete else None


def _private(folder: Path) -> Path:
    """The folder, if nobody but this user could have written into it: verl unpickles its files."""
    for path in [folder, *folder.rglob("*")]:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise KitError(f"checkpoint {folder} could have been written by another user ({path} is "
                           f"{'not yours' if info.st_uid != os.getuid() else 'group- or world-writable'}), and verl "
                           f"unpickles its files, which can run code: if you trust it, chown it and chmod -R go-w "
                           f"{folder}; else resume=off")
    return folder


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
    except KitError:
        raise
    except Exception:  # missing, truncated or not a checkpoint at all
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in state["files"].items())


def load_state(folder: Path) -> dict:
    """loop_state.pt read as data (weights_only=True): whatever the file holds, no pickled code runs."""
    try:
        return torch.load(Path(folder) / STATE_FILE, weights_only=True)
    except pickle.UnpicklingError as err:
        raise KitError(f"checkpoint {folder} holds {_refused(err)}, which torch.load(weights_only=True) refuses: it "
                       "comes from an older verl-kit or from elsewhere; move it away, or use a new output_dir") from None


def check_matches(state: dict, cfg, folder: Path, critic: bool):
    """A clear error when the run's config differs from the checkpoint's in a way weights cannot follow."""
    if critic and not (folder / "critic").is_dir():
        raise KitError(f"checkpoint {folder} has no critic, but algorithm.advantage_estimator=gae trains one: resume "
                       "with the estimator it was made with, or resume=off (or a new output_dir) to start over")
    for key, saved in state["config"].items():
        now = OmegaConf.select(cfg, key)
        if now != saved and key == "num_workers":  # derived: one per GPU, or num_cpu_workers
            raise KitError(f"checkpoint {folder} was made by {saved} workers and this run has {now}: its weights are "
                           f"sharded per worker, so give the run {saved} (num_gpus, num_cpu_workers, or the cluster's "
                           "nodes) to resume, or resume=off (or a new output_dir) to start over")
        if now != saved:
            raise KitError(f"checkpoint {folder} was made with {key}={saved!r}, this run has {key}={now!r}: "
                           f"set {key}={saved!r} to resume, or resume=off (or a new output_dir) to start over")


def restore_rng(state: dict):
    random.setstate(state["rng"]["python"])
    name, key, *position = state["rng"]["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), *position))
    torch.set_rng_state(state["rng"]["torch"])


def _rng_states() -> dict:
    """The driver's RNG states as plain values and tensors (numpy's key array as a list)."""
    name, key, *position = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, key.tolist(), *position), "torch": torch.get_rng_state()}


def _check_plain(loop_state: dict):
    """What env.py's state_dict() returned must come back through torch.load(weights_only=True), as resume reads it."""
    buffer = io.BytesIO()
    torch.save(loop_state, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as err:
        raise KitError(f"the loop state holds {_refused(err)}, which torch.load(weights_only=True) refuses: env.py's "
                       "state_dict() must return plain Python values (dicts, lists, numbers, strings) or torch "
                       "tensors") from None


def _refused(err: pickle.UnpicklingError) -> str:
    """What torch.load(weights_only=True) refused, out of its long message (e.g. GLOBAL numpy...._reconstruct)."""
    return str(err).split("Unsupported global: ")[-1].split(" was not")[0]


def limit_permissions(folder, folders: int, files: int):
    """Take away every permission bit beyond `folders` / `files` from the folder and everything in it."""
    for path in [Path(folder), *Path(folder).rglob("*")]:
        path.chmod(path.stat().st_mode & (folders if path.is_dir() else files))


def _must_match(cfg) -> dict:
    return {key: OmegaConf.select(cfg, key) for key in MUST_MATCH}


def _manifest(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}
