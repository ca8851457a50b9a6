"""Datasets in verl's format: the parquet files verl's preprocessing scripts write (examples/data_preprocess),
or JSON lines with the same fields. A row: data_source, prompt (chat messages, or text), reward_model.ground_truth,
and optionally extra_info (a dict, given to the reward function). Every row is checked when the file is read.
VerlFiles makes verl's own data.train_files / data.val_files keys a task of their own."""

import random
from pathlib import Path

import numpy as np
import pandas

from kit.data.checks import is_missing, is_prompt
from kit.errors import KitError

REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")


class VerlDataset:
    def __init__(self, path, prompt_key: str = "prompt"):
        self.path = Path(path).expanduser()
        frame = _read(self.path)
        if prompt_key != "prompt":
            if prompt_key not in frame.columns:
                raise KitError(f"{path} has no column '{prompt_key}' (data.prompt_key): name the column that holds the "
                               f"prompts, one of {', '.join(map(str, frame.columns))}")
            frame = frame.drop(columns=["prompt"], errors="ignore").rename(columns={prompt_key: "prompt"})
        if frame.empty:
            raise KitError(f"{path} has no rows: point the task at a file with problems")
        missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
        if missing:
            raise KitError(f"{path} has no column(s) {', '.join(missing)}: verl's format needs data_source, prompt "
                           "and reward_model.ground_truth in every row")
        self.rows = [_row(record, f"{path} row {index}") for index, record in enumerate(frame.to_dict("records"))]

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices) -> dict:
        """The rows at `indices` as env.py's get_batch returns them."""
        return _batch([self.rows[i] for i in indices])


def _batch(rows: list[dict]) -> dict:
    """Rows as env.py's get_batch returns them (copies: verl writes into extra_info)."""
    return {
        "prompts": [row["prompt"] if isinstance(row["prompt"], str) else [dict(m) for m in row["prompt"]] for row in rows],
        "ground_truths": [row["ground_truth"] for row in rows],
        "data_sources": [row["data_source"] for row in rows],
        "extra_infos": [dict(row["extra_info"]) for row in rows],
    }


class VerlFiles:
    """verl's data.train_files and data.val_files (a file or a list of files each) as the task, in place of env.py:
    training rows drawn at random (seeded), the first val_size held-out rows for validation."""

    def __init__(self, train_files, val_files, prompt_key: str):
        self.train = _rows_of(train_files, prompt_key)
        self.held_out = _rows_of(val_files, prompt_key) if val_files else None
        self.rng = random.Random(0)
        if self.held_out is not None:  # else no get_val_batch: validation is skipped, as for such an env.py
            self.get_val_batch = self._held_out_batch

    def get_batch(self, size: int) -> dict:
        return _batch([self.train[self.rng.randrange(len(self.train))] for _ in range(size)])

    def _held_out_batch(self, size: int) -> dict:
        if size > len(self.held_out):
            raise KitError(f"data.val_files hold {len(self.held_out)} rows, fewer than val_size={size}: lower val_size")
        return _batch(self.held_out[:size])

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict):
        self.rng.setstate(state["rng"])


def _rows_of(files, prompt_key: str) -> list[dict]:
    paths = [files] if isinstance(files, str) else list(files)
    return [row for path in paths for row in VerlDataset(path, prompt_key).rows]


def _read(path: Path) -> pandas.DataFrame:
    if not path.is_file():
        raise KitError(f"dataset file '{path}' not found: write it first (see examples/dataset/make_data.py)")
    try:
        if path.suffix == ".parquet":
            return pandas.read_parquet(path)
        if path.suffix in (".jsonl", ".json"):
            return pandas.read_json(path, lines=path.suffix == ".jsonl")
    except Exception as err:  # a truncated parquet file, a line that is not JSON, text that is not UTF-8
        raise KitError(f"dataset file '{path}' cannot be read ({type(err).__name__}: {err}): rewrite it") from None
    raise KitError(f"dataset file '{path}' is neither .parquet nor .jsonl: convert it to one of them")


def _row(record: dict, where: str) -> dict:
    """One row's fields, checked: a prompt as text or plain message dicts (parquet gives an array of dicts)."""
    prompt, reward_model, extra_info = record["prompt"], record["reward_model"], record.get("extra_info")
    if not isinstance(record["data_source"], str):
        raise KitError(f"{where} has the data_source {record['data_source']!r:.100}: give every row a name (a string)")
    if isinstance(prompt, np.ndarray):
        prompt = list(prompt)
    if not is_prompt(prompt):
        raise KitError(f"{where} has the prompt {prompt!r:.100}: a prompt is text or a list of "
                       "{'role': ..., 'content': ...} messages")
    if isinstance(prompt, list):
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    if not isinstance(reward_model, dict) or is_missing(reward_model.get("ground_truth")):
        raise KitError(f"{where} has no reward_model.ground_truth: give every row its answer")
    if not (is_missing(extra_info) or isinstance(extra_info, dict)):
        raise KitError(f"{where} has the extra_info {extra_info!r:.100}: extra_info is a dict, or left out")
    return {"prompt": prompt, "ground_truth": reward_model["ground_truth"], "data_source": record["data_source"],
            "extra_info": {} if is_missing(extra_info) else extra_info}
