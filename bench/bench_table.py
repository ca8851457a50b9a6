"""Tables of bench/run.sh runs: python bench/bench_table.py DIR

DIR/<run>/metrics.jsonl is a kit run (DIR/verl-*/metrics.jsonl: verl's own trainer, bench/verl_trainer.sh),
DIR/<run>/result.json a TRL one (bench/trl_bench.py); gpu_mem.csv beside either is nvidia-smi's memory in use
every 0.25 s. Prints one markdown table of the throughput runs (kit: means
of steps 2..end, step 1 includes warm-up and compilation, as does a resumed run's first step; TRL: trl_bench.py's own means of steps 2..end) with
the TRL/kit step-time and Ngpu/1gpu throughput ratios under it, a table of step 1 alone (warm-up included: the
only step a one-step run such as verl-*-s1 has) with verl/kit ratios, and one of the learning runs (*learn*): held-out accuracy
against training wall seconds (kit: cumulative timing/step of the train rows, validation left out). Writes
DIR/summary.json and, with matplotlib, DIR/learning_curve.png. A value a run did not record shows as "-".

Kit columns: new tokens = the longest response (the limit, when any response reaches it); rollout tok/s =
train/sampled_tokens / timing/generation; update tok/s = (prompt_length/mean + response_length/mean) x rows /
timing/update, rows = sampled_tokens / response_length/mean; peak GPU GB = perf/max_memory_allocated_gb; MFU =
perf/mfu/actor (verl's estimate, actor update only); log-probs s, update s = timing/log_prob, timing/update.
verl's trainer rows are read as kit rows (verl_as_kit): generation = timing_s/gen + timing_s/update_weights (the
weight copy into vllm and its wake-up, which the kit times inside generation; verl, at the end of the step before),
log-probs = timing_s/old_log_prob, update = timing_s/update_actor, step = timing_s/step.
"""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for kit
from kit.run.run_log import save_plot  # noqa: E402

COLUMNS = ("run", "model", "new tokens", "step s", "generation s", "rollout tok/s", "log-probs s", "update s",
           "update tok/s", "peak GPU GB (torch)", "GPU GB in use (nvidia-smi)", "MFU")


def model_of(run: str) -> str:
    if "default" in run:
        return "smollm2-135m (default task)"
    if "example" in run:
        return "smollm2-135m (example task)"
    if "learn" in run:
        return "smollm2-135m (trained)"
    if "qwen" in run:
        return "qwen2.5-7b (random)" if "7b" in run else "qwen2.5-0.5b (random)"
    return "smollm2-135m (random)"


def ratio(num, den):
    return num / den if num is not None and den else None


def kit_row(rows: list[dict], resumed_at: int | None = None) -> dict:
    """Means over the train rows but the first of each process (warm-up and compilation: step 1, and the step
    after the checkpoint a resumed run started from)."""
    warm_up = {1, None if resumed_at is None else resumed_at + 1}
    train = [r for r in rows if "train/reward_mean" in r and r["step"] not in warm_up]

    def total(value):
        """value(row) summed over the steps; None when a step lacks a key it reads."""
        try:
            return sum(value(r) for r in train) if train else None
        except KeyError:
            return None

    def update_tokens(r):  # (prompt + response) tokens per row x rows
        rows = r["train/sampled_tokens"] / r["response_length/mean"]
        return (r["prompt_length/mean"] + r["response_length/mean"]) * rows

    peaks = [r["perf/max_memory_allocated_gb"] for r in train if "perf/max_memory_allocated_gb" in r]
    mfu = total(lambda r: r["perf/mfu/actor"])
    return {
        "new tokens": int(max(r.get("response_length/max", 0) for r in train)) if train else None,
        "step s": ratio(total(lambda r: r["timing/step"]), len(train)),
        "generation s": ratio(total(lambda r: r["timing/generation"]), len(train)),
        "rollout tok/s": ratio(total(lambda r: r["train/sampled_tokens"]), total(lambda r: r["timing/generation"])),
        "log-probs s": ratio(total(lambda r: r["timing/log_prob"]), len(train)),
        "update s": ratio(total(lambda r: r["timing/update"]), len(train)),
        "update tok/s": ratio(total(update_tokens), total(lambda r: r["timing/update"])),
        "peak GPU GB (torch)": max(peaks, default=None),
        "MFU": ratio(mfu, len(train)),
    }


def kit_peers(run: str, runs) -> list[str]:
    """The kit runs a TRL or verl run (trl-*, verl-*) is compared with: the kit's run of the same name, for verl's
    also the hf one (its name without -vllm), whatever either's step count (-sN); none for other runs."""
    peer, _, rest = run.partition("-")
    if peer not in ("trl", "verl"):
        return []
    kit = "kit-" + rest.removesuffix("-v0")
    wanted = list(dict.fromkeys(re.sub(r"-s\d+", "", name) for name in (kit, kit.replace("-vllm", ""))))
    return [name for want in wanted for name in runs if name.startswith("kit-") and re.sub(r"-s\d+", "", name) == want]


def first_step(rows: list[dict]) -> dict:
    """Step 1's seconds (warm-up and compilation included), for runs too short for kit_row's means."""
    row = next((r for r in rows if "train/reward_mean" in r and r["step"] == 1), {})
    return {column: row.get(key) for column, key in (("step s", "timing/step"), ("generation s", "timing/generation"),
                                                    ("log-probs s", "timing/log_prob"), ("update s", "timing/update"))}


def verl_as_kit(line: dict) -> dict:
    """A step of verl's trainer (its file logger's {"step": N, "data": {...}}) under the kit's metric names; a key
    verl did not log stays out (its column shows "-")."""
    data, row = line["data"], {"step": line["step"]}
    names = {"critic/score/mean": "train/reward_mean", "timing_s/step": "timing/step",
             "timing_s/old_log_prob": "timing/log_prob", "timing_s/update_actor": "timing/update",
             "actor/perf/max_memory_allocated_gb": "perf/max_memory_allocated_gb", "perf/mfu/actor": "perf/mfu/actor",
             **{key: key for key in ("response_length/mean", "response_length/max", "prompt_length/mean")}}
    row.update({kit: data[key] for key, kit in names.items() if key in data})
    if "timing_s/gen" in data:
        row["timing/generation"] = data["timing_s/gen"] + data.get("timing_s/update_weights", 0.0)
    if {"perf/total_num_tokens", "response_length/mean", "prompt_length/mean"} <= data.keys():  # response tokens
        share = data["response_length/mean"] / (data["prompt_length/mean"] + data["response_length/mean"])
        row["train/sampled_tokens"] = data["perf/total_num_tokens"] * share
    return row


def trl_row(result: dict) -> dict:
    return {"new tokens": result.get("new_tokens"), "step s": result.get("step_s_mean"),
            "generation s": result.get("generation_s_mean"), "rollout tok/s": result.get("rollout_tokens_per_s"),
            "update tok/s": result.get("update_tokens_per_s"), "peak GPU GB (torch)": result.get("peak_gpu_gb"),
            "MFU": result.get("mfu")}


def nvidia_smi_peak_gb(path: Path):
    """The highest memory in use on any one GPU (lines 'index, MiB' or, since the runner also samples utilisation, 'index, busy %, MiB')."""
    mib = [int(line.split(",")[-1]) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return max(mib) / 1024 if mib else None


def kit_curve(rows: list[dict]) -> list[dict]:
    curve, wall = [], 0.0
    for r in rows:
        if "train/reward_mean" in r:
            wall = wall + r["timing/step"] if wall is not None and "timing/step" in r else None
        if "val/accuracy" in r:
            curve.append({"step": r["step"], "wall_s": wall, "val_accuracy": r["val/accuracy"]})
    return curve


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (str, int)):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def main(folder: Path):
    throughput, curves, generation, step_one = {}, {}, {}, {}
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        run, metrics, result = run_dir.name, run_dir / "metrics.jsonl", run_dir / "result.json"
        if run.startswith(("gen-", "vllmgen-")) and result.exists():  # bench/generation.py, bench/vllm_generation.py
            generation[run] = json.loads(result.read_text())
            continue
        if metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            if run.startswith("verl-"):  # verl's own trainer (bench/verl_trainer.sh)
                rows = [verl_as_kit(line) for line in rows]
            resumed = re.search(r"global_step_(\d+)", (run_dir / "resumed.txt").read_text()) \
                if (run_dir / "resumed.txt").exists() else None
            row, curve = kit_row(rows, resumed and int(resumed[1])), kit_curve(rows)
            if "learn" not in run:
                step_one[run] = first_step(rows)
        elif result.exists():
            data = json.loads(result.read_text())
            row, curve = trl_row(data), data.get("curve", [])
        else:
            continue
        if "learn" in run:
            curves[run] = curve
        else:
            throughput[run] = {"model": model_of(run), **row,
                               "GPU GB in use (nvidia-smi)": nvidia_smi_peak_gb(run_dir / "gpu_mem.csv")}

    if throughput:
        print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for run, row in throughput.items():
        print("| " + " | ".join([run] + [fmt(row.get(c)) for c in COLUMNS[1:]]) + " |")
    ratios = {}
    for run, row in throughput.items():
        for kit_run in kit_peers(run, throughput):  # TRL's or verl's trainer against the kit's same run
            if (value := ratio(row["step s"], throughput[kit_run]["step s"])) is not None:  # a one-step run has none
                ratios[f"{run} / {kit_run} step time"] = value
        one_gpu = re.sub(r"-\d+gpu", "", run).replace("-resume", "")
        if re.search(r"-\d+gpu", run) and one_gpu in throughput:  # the same batch, so throughput goes as 1 / step time
            ratios[f"{run} / {one_gpu} throughput"] = ratio(throughput[one_gpu]["step s"], row["step s"])
    for name, value in ratios.items():
        print(f"- {name}: {fmt(value)}x")
    print_step_one(step_one)

    if curves:
        steps = sorted({point["step"] for curve in curves.values() for point in curve})
        by_step = {run: {point["step"]: point for point in curve} for run, curve in curves.items()}
        print("\n| step | " + " | ".join(f"{run} wall s | {run} held-out acc" for run in curves) + " |")
        print("|---|" + "---|---|" * len(curves))
        for step in steps:
            cells = [(fmt(p.get("wall_s")), fmt(p.get("val_accuracy"))) if (p := by_step[run].get(step)) else ("-", "-")
                     for run in curves]
            print(f"| {step} | " + " | ".join(f"{wall} | {acc}" for wall, acc in cells) + " |")
        plot(curves, folder / "learning_curve.png")
    if generation:
        print("\n| generation (same GPU, model, 64 x 8 rows) | new tokens | variant | tok/s | ms per decode step | "
              "speed-up over generate | greedy tokens equal to step-by-step |\n|---|---|---|---|---|---|---|")
    for run, data in generation.items():
        # results from before the compiled variant hold one bool: all greedy tokens equal with the graph, or not
        agreement = data.get("greedy_equals_eager") or (
            {"sampler_graphs": float(data["greedy_graph_equals_eager"])} if "greedy_graph_equals_eager" in data else {})
        for variant in [name for name, figures in data.items() if isinstance(figures, dict) and "tokens_per_s" in figures]:
            figures = data[variant]
            print(f"| {run} | {data['new_tokens']} | {variant} | {fmt(figures['tokens_per_s'])} | "
                  f"{figures['ms_per_decode_step']} | {speedup(variant, figures)} | "
                  f"{agreement.get(variant, '-')} |")
    summary = {"throughput": throughput, "ratios": ratios, "learning_curves": curves, "generation": generation}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))


def print_step_one(step_one: dict[str, dict]):
    """Step 1 of each kit or verl throughput run, and each verl run's step 1 against the kit's same runs'."""
    if not step_one:
        return
    columns = ("step s", "generation s", "log-probs s", "update s")
    print("\n| run, step 1 (warm-up included) | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 1))
    for run, row in step_one.items():
        print("| " + " | ".join([run] + [fmt(row[c]) for c in columns]) + " |")
    for run, row in step_one.items():
        for kit_run in kit_peers(run, step_one):
            print(f"- {run} / {kit_run} step 1: {fmt(ratio(row['step s'], step_one[kit_run]['step s']))}x")


def speedup(variant: str, figures: dict) -> str:
    """bench/generation.py's variants against plain generate (generate itself: 1x); vLLM's have no such figure."""
    if variant == "generate":
        return "1.00x"
    return f"{fmt(figures['speedup_vs_generate'])}x" if "speedup_vs_generate" in figures else "-"


def plot(curves: dict, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, curve in curves.items():
        points = [(p["wall_s"], p["val_accuracy"]) for p in curve if p.get("wall_s") is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=run)
    ax.set_xlabel("training wall seconds (validation left out)")
    ax.set_ylabel("held-out accuracy (greedy)")
    save_plot(fig, ax, out)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
