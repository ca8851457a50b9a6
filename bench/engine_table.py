"""The table of bench/engines.sh runs: python bench/engine_table.py DIR (one ENGINE/metrics.jsonl each)."""

import json
import statistics
import sys
from pathlib import Path

PHASES = ("generation", "reward", "log_prob", "update")
SERVER_PARTS = ("weight_sync", "sleep")  # inside generation, vllm/sglang only


def main(folder: Path):
    print("| engine | s/step | generation s | of which weight sync, sleep | rollout tokens/s | " + " | ".join(PHASES[1:])
          + " | held-out before | after | engine/trainer log-ppl gap |")
    print("|---|---|---|---|---|" + "---|" * (len(PHASES) - 1) + "---|---|---|")
    for path in sorted(folder.glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        val = [r["val/accuracy"] for r in rows if "val/accuracy" in r]
        steps = [r for r in rows if "train/reward_mean" in r][2:]  # the first steps include compilation and warm-up
        if not steps:  # a run that failed before its third step
            continue
        mean = {p: statistics.mean(r[f"timing/{p}"] for r in steps) for p in PHASES}
        rate = statistics.mean(r["train/sampled_tokens"] for r in steps) / mean["generation"]
        gap = statistics.mean(r["rollout_corr/log_ppl_abs_diff"] for r in steps)
        server = ", ".join(f"{statistics.mean(r[f'timing/{p}'] for r in steps):.2f}" for p in SERVER_PARTS
                           if f"timing/{p}" in steps[0]) or "-"
        print(f"| {path.parent.name} | {sum(mean.values()):.2f} | {mean['generation']:.2f} | {server} | {rate:.0f} | "
              + " | ".join(f"{mean[p]:.2f}" for p in PHASES[1:])
              + (f" | {val[0]:.3f} | {val[-1]:.3f}" if val else " | - | -") + f" | {gap:.4f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
