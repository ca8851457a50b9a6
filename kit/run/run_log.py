"""Per-step metrics: verl's tracking backends (wandb, tensorboard, console), a JSONL history of every metric, one
short console line per step under a progress bar, and a PNG plot of train reward and validation accuracy."""

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm
from verl.utils.tracking import Tracking

from kit.run.checkpoints import STATE_FILE


class RunLog:
    def __init__(self, cfg, total_steps: int, first_step: int = 0):
        self.dir = Path(cfg.output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.history = self.dir / "metrics.jsonl"
        kept = "".join(line + "\n" for line in self._rows_until(first_step))
        with written_whole(self.history) as partial:  # a kill mid-write loses no row
            partial.write_text(kept)
        self.tracking = Tracking(project_name=cfg.project_name, experiment_name=cfg.experiment_name,
                                 default_backend=list(cfg.logger), config=OmegaConf.to_container(cfg))
        self.bar = tqdm(total=total_steps, initial=first_step, desc="training", unit="step", dynamic_ncols=True)
        # torch 2.13's nested tensors (verl's worker batches) warn of an fx deprecation no user can act on
        logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
        self.timing = {}

    def _rows_until(self, step: int) -> list[str]:
        """A resumed run keeps the history up to its checkpoint; rows logged after it are logged again."""
        if step == 0 or not self.history.exists():
            return []
        rows = []
        for line in self.history.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    rows.append(line)
            except (json.JSONDecodeError, KeyError):  # a line cut short when the run was killed
                continue
        return rows

    @contextmanager
    def timer(self, name: str):
        """Time a phase of the step: timing/<name> in seconds."""
        start = time.perf_counter()
        yield
        self.timing[f"timing/{name}"] = time.perf_counter() - start

    def log(self, metrics: dict, step: int):
        metrics = {**metrics, **self.timing}
        self.timing = {}
        self.tracking.log(data=metrics, step=step)
        with self.history.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if "train/reward_mean" in metrics:
            self.bar.write(step_line(step, metrics))
            self.bar.update(1)
        elif "val/accuracy" in metrics:
            self.bar.write(f"step {step}: held-out accuracy {metrics['val/accuracy']:.3f}, reward "
                           f"{metrics['val/reward_mean']:.3f}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Close the bar even when the run fails, so an error prints after it, and plot what was logged."""
        self.bar.close()
        plot_metrics(self.history, self.dir / "metrics.png")


def step_line(step: int, metrics: dict) -> str:
    """One short line for a training step: reward, accuracy, KL when there is one, response length, and the step's
    seconds with their split (the full metrics are in metrics.jsonl)."""
    kl = metrics.get("actor/kl_loss", metrics.get("actor/reward_kl_penalty"))
    phases = [(name, metrics.get(f"timing/{key}", 0.0)) for name, key in
              (("generation", "generation"), ("reward", "reward"), ("log-probs", "log_prob"), ("update", "update"))]
    split = ", ".join(f"{name} {seconds:.2f}" for name, seconds in phases if seconds >= 0.005)
    return (f"step {step}: reward {metrics['train/reward_mean']:.3f}, accuracy {metrics['train/accuracy']:.3f}"
            + (f", kl {kl:.4f}" if kl is not None else "")
            + f", response length {metrics.get('response_length/mean', 0):.1f}"
            + f", {metrics.get('timing/step', 0):.2f} s ({split})")


def plot_metrics(history: Path, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in history.read_text().splitlines() if line]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train/reward_mean", "train reward"), ("val/accuracy", "held-out accuracy (greedy)")):
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            ax.plot(*zip(*points), marker="o" if key.startswith("val") else None, label=label)
    ax.set_xlabel("step")
    save_plot(fig, ax, out)


def save_plot(fig, ax, out: Path):
    """A 0-1 y axis, a grid and a legend, written to `out` as PNG."""
    import matplotlib.pyplot as plt

    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    with written_whole(Path(out)) as partial:  # outputs_written_after reads its time
        fig.savefig(partial, dpi=100, format="png")
    plt.close(fig)


@contextmanager
def written_whole(path: Path):
    """A hidden file beside `path` to write; it replaces `path` in one step when the block ends, so `path` is
    always either the old file or the whole new one."""
    partial = path.with_name(f".{path.name}.partial")
    yield partial
    os.replace(partial, path)


def outputs_written_after(output_dir, checkpoint: Path) -> bool:
    """Whether the Hugging Face export and the plot were written after `checkpoint` (the run's last): a run killed
    between its last checkpoint and them is not finished, and resuming from that checkpoint writes them."""
    since = (Path(checkpoint) / STATE_FILE).stat().st_mtime
    outputs = [Path(output_dir) / "hf_model" / "config.json", Path(output_dir) / "metrics.png"]
    return all(path.is_file() and path.stat().st_mtime >= since for path in outputs)
