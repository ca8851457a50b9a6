"""Datasets in verl's format: the parquet files verl's preprocessing scripts write (examples/data_preprocess),
or JSON lines with the same fields. A row: data_source, prompt (chat messages), reward_model.ground_truth,
and optionally extra_info (a dict, given to the reward function)."""

from pathlib import Path

import pandas

from kit.errors import KitError

REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")


class VerlDataset:
    def __init__(self, path):
        self.path = Path(path)
        frame = _read(self.path)
        missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
        if missing:
            raise KitError(f"{path} has no column(s) {', '.join(missing)}: verl's format needs data_source, prompt "
                           "and reward_model.ground_truth in every row")
        if frame.empty:
            raise KitError(f"{path} has no rows: point the task at a file with problems")
        self.rows = frame.to_dict("records")
        for index, row in enumerate(self.rows):
            if not isinstance(row["reward_model"], dict) or row["reward_model"].get("ground_truth") is None:
                raise KitError(f"{path} row {index} has no reward_model.ground_truth: give every row its answer")

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices) -> dict:
        """The rows at `indices` as env.py's get_batch returns them."""
        rows = [self.rows[i] for i in indices]
        return {
            "prompts": [_prompt(row["prompt"]) for row in rows],
            "ground_truths": [row["reward_model"]["ground_truth"] for row in rows],
            "data_sources": [row["data_source"] for row in rows],
            "extra_infos": [dict(row.get("extra_info") or {}) for row in rows],
        }


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


def _prompt(prompt):
    """A chat prompt as plain message dicts (parquet gives an array of dicts), or the string as it is."""
    return prompt if isinstance(prompt, str) else [{"role": m["role"], "content": m["content"]} for m in prompt]
