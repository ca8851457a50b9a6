"""The table and plot of bench/estimators.sh runs: python bench/estimator_table.py DIR (one NAME.jsonl each)."""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PHASES = ("generation", "reward", "log_prob", "update")


def main(folder: Path):
    fig, ax = plt.subplots(figsize=(7, 4))
    print("| estimator | held-out before | after 100 steps | s/step | " + " | ".join(PHASES) + " |")
    print("|---|---|---|---|" + "---|" * len(PHASES))
    for path in sorted(folder.glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        val = [(r["step"], r["val/accuracy"]) for r in rows if "val/accuracy" in r]
        steps = [r for r in rows if "train/reward_mean" in r][5:]  # the first steps include compilation
        phases = [statistics.mean(r[f"timing/{p}"] for r in steps) for p in PHASES]
        print(f"| {path.stem} | {val[0][1]:.3f} | {val[-1][1]:.3f} | {sum(phases):.2f} | "
              + " | ".join(f"{t:.2f}" for t in phases) + " |")
        ax.plot(*zip(*val), marker="o", label=path.stem)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "heldout_accuracy.png", dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
