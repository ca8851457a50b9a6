"""The benchmark runs by name: the table bench/run.sh starts runs from.

  python bench/catalogue.py --list     every run, grouped by the figure it feeds, one line each
  python bench/catalogue.py --parts    the name parts and the environment variables the commands read
  python bench/catalogue.py NAME       the shell command of run NAME
  python bench/catalogue.py --check    validate the table: each name made of declared parts, each file its command
                                       names present
  (bench/run.sh also asks --needs RUN... before it starts a queue, and --vars NAME before each run.)

A name is KIND-WORKLOAD[-PART...]. The KIND says what runs (kit, trl, verl, gen, vllmgen; prof-NAME profiles
kit-NAME's update, vllmload-NAME loads the export of the earlier run NAME in vLLM). The WORKLOAD is a random model
SHAPE, optionally followed by the new tokens per response (kit-qwen-1024), or a task of the kit (learn, default,
example_NAME). Each PART adds settings. RUNS is the table: a name must be in it and be made of declared parts only,
so a new run is one line in RUNS and a new setting one entry in PARTS. A part written with {N} takes a number
(tok{N}: tok8192).
"""

import os
import re
import shlex
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The figures and the runs that feed them (bench/README.md: which table each goes to). TRL's and verl's runs are
# compared with the kit's runs of the same name (bench/bench_table.py).
RUNS = {
    "throughput against TRL, 256 and 1,024 new tokens": [
        "kit-smollm2", "trl-smollm2", "kit-qwen-1024", "trl-qwen-1024",
        "kit-smollm2-liger", "kit-smollm2-noliger", "kit-qwen-1024-liger", "kit-qwen-1024-noliger",
        "kit-qwen-1024-fusedtorch",
        "kit-qwen-1024-tok65536",
    ],
    "learning curve against TRL": [
        "kit-learn", "trl-learn", "kit-learn-liger", "kit-learn-vllm", "kit-learn-sglang", "kit-learn-lora",
    ],
    "engines: hf, vllm and sglang, and vLLM alone": [
        "kit-smollm2-vllm", "kit-qwen-1024-vllm", "kit-qwen-1024-sglang", "kit-qwen-1024-vllm-nocache",
        "kit-qwen-1024-vllm-s3", "kit-qwen-1024-vllm-nolp-s3", "kit-qwen-1024-vllm-stats-watch-s3",
        "vllmgen-qwen-1024", "gen-smollm2", "gen-qwen-1024", "kit-default", "kit-default-vllm", "kit-default-sglang",
    ],
    "verl 0.9.1's own trainer against the kit": [
        "verl-qwen-1024-vllm-s1", "verl-qwen-1024-vllm", "kit-qwen-1024-s3",
    ],
    "LoRA, and exports loaded in vLLM": [
        "kit-smollm2-lora-s2", "kit-qwen-7b-1024-lora-ckpt-free-s2", "kit-qwen-7b-1024-lora-ckpt-free-s3",
        "vllmload-kit-smollm2-lora-s2", "vllmload-kit-qwen-7b-1024-lora-ckpt-free-s2",
        "kit-default-lora-vllm-s12", "kit-default-lora-vllm-eager-s12", "kit-default-lora-sglang-eager-s12",
    ],
    "7B on one GPU: offload and gradient checkpointing": [
        "kit-qwen-7b-1024-optoffload-ckpt-free-tok8192-s2", "kit-qwen-7b-1024-optoffload-ckpt-free-s2",
        "kit-qwen-7b-1024-offload-ckpt-free-s3",
    ],
    "several GPUs, and a run killed and resumed": [
        "kit-qwen-1024-2gpu", "kit-default-2gpu-resume", "kit-default-vllm-2gpu-resume", "kit-default-vllm-2gpu-tp2",
    ],
    "examples (multi-turn tasks)": [
        "kit-example_tool_use", "kit-example_tool_use-liger", "kit-example_tool_use-sglang",
        "kit-example_text_game-sglang",
    ],
    "long rollouts: long-tailed lengths, 4,096 and 16,384 new tokens": [
        "kit-qwen0.5b-4096-hf", "kit-qwen0.5b-4096-vllm", "kit-qwen0.5b-4096-sglang", "kit-qwen0.5b-4096-hf-s2",
        "kit-qwen0.5b-4096-hf-free-s2", "kit-qwen0.5b-4096-vllm-s2",
    ],
    "profiles of the update": [
        "prof-qwen-1024", "prof-qwen-1024-syncs", "prof-default-pyprof", "prof-default-pyprof-first",
    ],
}

# Environment variables the commands read; the commands below write them ${NAME:-default}.
KNOBS = {
    "STEPS": "steps of a kit throughput or verl run (5) and of a kit-default run (20); an sN part wins",
    "LEN": "new tokens per response where the name gives none (256)",
    "EXAMPLE_STEPS": "steps of a kit-example_* run (30)",
    "EXTRA": "key=value overrides appended to every kit and prof command, after the name's (a CPU dry run: "
             "EXTRA='num_gpus=0 batch_size=4 n_generations=2 inference.max_response_length=8')",
    "MODELS": "the random models' folder; bench/run.sh builds a missing one first (/tmp/models)",
    "SGL_KWARGS": "the sglang part's engine arguments (default: FA3 attention and torch sampling, sgl-kernel's "
                  "prebuilt kernels, so nothing of FlashInfer's is compiled at start)",
    "QWEN_MICRO": "TRL's micro-batch on the Qwen shapes (16)",
    "TRL_PYTHON": "the python of TRL's own environment (python): verl 0.9.1 breaks beside trl 1.x",
    "VERL_KIT_CACHE": "the kit's model cache, where trl-learn finds the kit's converted SmolLM2 (~/.cache/verl-kit)",
    "VLLM_LOG_STATS_INTERVAL": "seconds between vLLM's throughput lines in stats runs (2; vLLM's own default: 10)",
    "BENCH_RUNS": "the runs' folders (/tmp/runs/bench)",
}

# Random models (bench/random_model.py MODEL; {len}: the run's new tokens), trained on 64 prompts x 8 responses of
# their task a step; env: per kind of run. The throughput shapes never end a response (every row runs to its
# limit); the long-tail ones (qwen0.5b, qwen1.5b, qwen7b) end them at geometric lengths of mean a quarter of the
# limit, on prompts of about 100 tokens.
LONG_TAIL = "bench/long_tail_task.py"
SHAPES = {
    "smollm2": dict(model="smollm2-135m", about="random SmolLM2-135M"),
    "qwen": dict(model="qwen2.5-0.5b", about="random Qwen2.5-0.5B", env={"trl": {"MICRO": "${QWEN_MICRO:-16}"}}),
    "qwen-7b": dict(model="qwen2.5-7b", about="random Qwen2.5-7B", env={"trl": {"MICRO": "${QWEN_MICRO:-16}"}}),
    **{f"qwen{size}": dict(model=f"qwen2.5-{size}-tail{{len}}", task=LONG_TAIL,
                           about=f"random Qwen2.5-{size.upper()}, long-tailed lengths",
                           env={"trl": {"TASK": LONG_TAIL}, "verl": {"TASK": LONG_TAIL, "PROMPT_LEN": "160"}})
       for size in ("0.5b", "1.5b", "7b")},
}

# (kind, workload) -> its command, its steps where no sN part says, what it needs and its description. The workload
# "shape" is a SHAPE and its new tokens; {dir} is the run's folder, {model} the random model's, {len} the new tokens.
THROUGHPUT = ("env={task} model_path={model} batch_size=64 n_generations=8 "
              "inference.max_response_length={len} steps_per_epoch={steps} save_every=0 val_every=0 resume=off")
COMMANDS = {
    ("kit", "shape"): dict(
        cmd="python algorithm.py " + THROUGHPUT + " output_dir={dir} num_gpus={gpus}", steps="${STEPS:-5}",
        about="the kit"),
    ("kit", "learn"): dict(
        cmd="python algorithm.py steps_per_epoch={steps} val_every=10 save_every=0 resume=off output_dir={dir} "
            "num_gpus={gpus}",
        steps="100", needs="smollm2", about="the kit, the default task, held-out accuracy every 10 steps"),
    ("kit", "default"): dict(
        cmd="python algorithm.py steps_per_epoch={steps} save_every=10 val_every=0 output_dir={dir} num_gpus={gpus}",
        steps="${STEPS:-20}", needs="smollm2", about="the kit, the default task, a checkpoint every 10 steps"),
    ("kit", "example_{NAME}"): dict(
        cmd="python algorithm.py config=examples/{NAME}/config.yaml batch_size=8 val_size=64 val_every=10 "
            "save_every=0 steps_per_epoch={steps} resume=off output_dir={dir} num_gpus={gpus}",
        steps="${EXAMPLE_STEPS:-30}", needs="smollm2",
        about="the kit, examples/{NAME}, 8 prompts a step, held-out accuracy on 64 every 10 steps"),
    ("trl", "shape"): dict(
        cmd="${TRL_PYTHON:-python} bench/trl_bench.py throughput {model} {len} {dir}/result.json", needs="trl",
        about="TRL 1.16's GRPOTrainer"),
    ("trl", "learn"): dict(
        cmd="${TRL_PYTHON:-python} bench/trl_bench.py learn ${VERL_KIT_CACHE:-~/.cache/verl-kit}/smollm2 "
            "{dir}/result.json",
        needs="trl smollm2", about="TRL 1.16's GRPOTrainer, the default task, held-out accuracy every 10 steps"),
    ("verl", "shape"): dict(
        cmd="bash bench/verl_trainer.sh {dir} {model} {len} {steps}", steps="${STEPS:-5}", needs="vllm transferqueue",
        runner={"engine_stats": "1"}, about="verl 0.9.1's own trainer, vLLM rollout, on the kit's throughput task"),
    ("gen", "shape"): dict(
        cmd="python bench/generation.py {model} {len} {dir}/result.json",
        about="the kit's hf sampler against plain HF generate, one batch"),
    ("vllmgen", "shape"): dict(
        cmd="python bench/vllm_generation.py {model} {len} {dir}/result.json", needs="vllm",
        about="vLLM alone (offline LLM, no verl) on the kit's throughput batch"),
}
# prof-NAME: kit-NAME through bench/profile_update.py, 4 steps; vllmload-NAME: the export of the earlier run NAME
PROFILE = dict(cmd="python bench/profile_update.py {dir}", steps="4", refuses="s{N}",
               about="update 3 of 4 steps profiled (torch.profiler) of")
VLLMLOAD = dict(cmd="python bench/vllm_load_export.py ${BENCH_RUNS:-/tmp/runs/bench}/{run}/hf_model {model} "
                    "{dir}/result.json",
                needs="vllm", about="the export of {run} (its hf_model/, with LoRA its adapter too) loaded in vLLM")

# Name parts: where they may stand (kinds, and workloads where only some), the kit overrides they add (args), the
# values they set (gpus, steps), env, what they need, and what bench/run.sh does around the run (runner).
PARTS = {
    "{N}gpu": dict(kinds="kit", set={"gpus": "{N}"}, about="{N} GPUs"),
    "hf": dict(kinds="kit", group="engine", args="inference.engine=hf", about="hf engine (the default)"),
    "vllm": dict(kinds="kit verl", group="engine", args="inference.engine=vllm", needs="vllm",
                 runner={"engine_stats": "1"}, about="vllm engine"),
    "sglang": dict(kinds="kit", group="engine", needs="sglang", runner={"engine_stats": "1"},
                   args="inference.engine=sglang ${SGL_KWARGS:-inference.engine_kwargs.attention_backend=fa3 "
                        "inference.engine_kwargs.sampling_backend=pytorch}",
                   about="sglang engine"),
    "tp{N}": dict(kinds="kit", args="inference.tensor_parallel_size={N}", about="{N} GPUs an engine replica"),
    "lora": dict(kinds="kit", args="training.actor.lora.rank=16 training.actor.lora.alpha=32 training.actor.lr=1e-4",
                 about="LoRA rank 16, alpha 32, lr 1e-4"),
    "tok{N}": dict(kinds="kit", args="training.actor.max_tokens_per_gpu={N}", about="{N} tokens a micro-batch"),
    "b{N}": dict(kinds="kit", args="batch_size={N}", about="{N} prompts a step"),
    "s{N}": dict(kinds="kit verl", set={"steps": "{N}"}, about="steps: {N}"),
    "offload": dict(kinds="kit", group="offload", about="weights and optimizer state offloaded",
                    args="training.actor.param_offload=true training.actor.optimizer_offload=true"),
    "optoffload": dict(kinds="kit", group="offload", args="training.actor.optimizer_offload=true",
                       about="optimizer state offloaded"),
    "ckpt": dict(kinds="kit", args="training.actor.gradient_checkpointing=true", about="gradient checkpointing"),
    "free": dict(kinds="kit", args="inference.free_sampler=true", about="hf sampler freed for the update"),
    "fusedtorch": dict(kinds="kit", args="training.actor.fused_kernels=torch", about="fused log-probs (torch)"),
    "liger": dict(kinds="kit", group="liger", args="training.actor.liger=true", about="Liger-Kernel on"),
    "noliger": dict(kinds="kit", group="liger", args="training.actor.liger=false", about="Liger-Kernel off"),
    "compile": dict(kinds="kit", args="inference.compile=true", about="hf decode step compiled"),
    "eager": dict(kinds="kit", args="inference.enforce_eager=true",
                  about="engine without CUDA graphs (starts sooner, generates slower)"),
    "nocache": dict(kinds="kit", args="inference.free_cache_engine=false", about="engine awake through the update"),
    "nolp": dict(kinds="kit", args="inference.engine_log_probs=false", about="no engine log-probs"),
    "stats": dict(kinds="kit", args="inference.engine_kwargs.disable_log_stats=false",
                  env={"VLLM_LOG_STATS_INTERVAL": "${VLLM_LOG_STATS_INTERVAL:-2}"},
                  about="vLLM's throughput lines (engine_stats.txt)"),
    "watch": dict(kinds="kit", runner={"watch": "1"},
                  about="top and py-spy in step 2's generation (bench/watch_generation.sh)"),
    "resume": dict(kinds="kit", workloads="default", runner={"kill_after_step": "12"},
                   about="SIGKILL once step 12 is logged, then resumed from step 10"),
    "pyprof": dict(kinds="prof", env={"PROFILE_PYTHON": "1"}, about="cProfile instead"),
    "syncs": dict(kinds="prof", env={"PROFILE_SYNCS": "1"}, about="synchronizing CUDA calls counted by source line"),
    "first": dict(kinds="prof", env={"PROFILE_CALL": "1"}, about="the first update instead, warm-up included"),
    "v0": dict(kinds="verl", about="verl's legacy trainer (bench/verl_trainer.sh reads -v0 off the folder's name)"),
}
# Parts of older result folders that no longer stand for a setting: a name with one is refused, with the reason.
RETIRED = {
    "micro{N}": "micro-batches are counted in tokens since 263205a: tok{N}",
    "fusedtriton": "fused_kernels is none or torch since 6f540e6: verl's triton backend fails on padded batches",
    "windows": "it labelled a version of the hf sampler's decode windows (ed2c5f3), not a setting: gen-smollm2",
}


class Unknown(Exception):
    """A name the catalogue refuses; the message is the one line bench/run.sh prints."""


def expand(text: str) -> str:
    """${NAME:-default} from the environment, and ~/ as the home folder."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1]) or m[2], text)
    return re.sub(r"(^|[\s=])~/", lambda m: m[1] + str(Path.home()) + "/", text)


def fill(template: str, values: dict) -> str:
    """template with each {key} of values filled in (${NAME:-default} is left to expand)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m[1], m[0])), template)


def match(keys, part: str):
    """The key that part spells ({N}: a number, {NAME}: a word), and the values it gives them; None if none."""
    for key in keys:
        pattern = re.escape(key).replace(r"\{N\}", r"(?P<N>\d+)").replace(r"\{NAME\}", r"(?P<NAME>\w+)")
        if found := re.fullmatch(pattern, part):
            return key, found.groupdict()
    return None, {}


def run_dir(name: str) -> str:
    return expand("${BENCH_RUNS:-/tmp/runs/bench}/") + name


def parse(name: str) -> dict:
    """Run NAME from its declared parts: command, env, needs, runner settings, description; Unknown if a part is
    not declared or does not apply."""
    kind, _, rest = name.partition("-")
    if kind == "vllmload":
        inner = lookup(rest)
        if "model" not in inner or inner["kind"] != "kit":
            raise Unknown(f"{name}: vllmload- loads the export of a kit run on a random model, not of {rest}")
        values = {"run": rest, "model": f"${{MODELS:-/tmp/models}}/{inner['model']}", "dir": run_dir(name)}
        return dict(assemble(name, kind, VLLMLOAD, values, [], fill(VLLMLOAD["about"], {"run": rest})),
                    model=inner["model"])
    base = "kit" if kind == "prof" else kind  # a profile is a kit run, its parts too
    workload, shape, values, parts = parse_workload(name, kind, base, rest)
    spec = COMMANDS[base, workload]
    about = fill(spec["about"], values)
    values.update(dir=run_dir(name), gpus="1", steps=spec.get("steps", ""))
    chosen = parse_parts(name, kind, base, workload, parts)
    for key, number in chosen:
        values.update({value: fill(text, number) for value, text in PARTS[key].get("set", {}).items()})
    if shape:
        tokens = expand(values["len"])
        about += f", {SHAPES[shape]['about']}" + (f", {int(tokens):,} new tokens" if tokens.isdigit() else "")
        spec = dict(spec, env=SHAPES[shape].get("env", {}).get(kind, {}))
    if kind == "prof":
        values["steps"] = PROFILE["steps"]
        spec = dict(spec, cmd=spec["cmd"].replace("python algorithm.py", PROFILE["cmd"], 1))
        about = f"{PROFILE['about']} {about}"
    run = assemble(name, kind, spec, values, chosen, about)
    return dict(run, model=fill(SHAPES[shape]["model"], {"len": expand(values["len"])})) if shape else run


def parse_workload(name: str, kind: str, base: str, rest: str):
    """The workload of a name's REST (a SHAPE with its new tokens, or a task), the shape if any, the values it
    sets, and the parts after it."""
    tasks = sorted({w for k, w in COMMANDS if k == base} - {"shape"})
    takes_shape = (base, "shape") in COMMANDS
    if not tasks and not takes_shape:
        kinds = sorted({k for k, _ in COMMANDS} | {"prof", "vllmload"})
        raise Unknown(f"{name}: '{kind}' is not a kind of run ({', '.join(kinds)})")
    shape = next((s for s in sorted(SHAPES, key=len, reverse=True) if rest == s or rest.startswith(s + "-")), None)
    if shape and takes_shape:
        parts = rest[len(shape) + 1:].split("-") if rest != shape else []
        tokens = parts.pop(0) if parts and parts[0].isdigit() else "${LEN:-256}"
        model = fill(SHAPES[shape]["model"], {"len": expand(tokens)})
        task = SHAPES[shape].get("task", "bench/throughput_task.py")
        return "shape", shape, {"model": f"${{MODELS:-/tmp/models}}/{model}", "len": tokens, "task": task}, parts
    first, *parts = rest.split("-")
    task, fields = match(tasks, first)
    if task is None:
        raise Unknown(f"{name}: '{first}' is neither a shape ({', '.join(SHAPES) if takes_shape else 'none'}) nor "
                      f"a task ({', '.join(tasks) or 'none'}) of {kind}- runs")
    if "NAME" in fields and not (ROOT / "examples" / fields["NAME"] / "config.yaml").is_file():
        raise Unknown(f"{name}: there is no examples/{fields['NAME']}/config.yaml")
    return task, None, fields, parts


def parse_parts(name: str, kind: str, base: str, workload: str, parts: list[str]) -> list:
    """Each part's key in PARTS and the number it carries; Unknown for a part not declared, not for this kind of
    run, or in the same group as another (two engines)."""
    chosen, taken = [], {}
    for part in parts:
        key, number = match(PARTS, part)
        if key is None:
            retired, _ = match(RETIRED, part)
            raise Unknown(f"{name}: '{part}' is not a declared name part" + (f" ({RETIRED[retired]})" if retired else ""))
        declared = PARTS[key]
        kinds, where = declared["kinds"].split(), declared.get("workloads", "").split()
        if kind == "prof" and key == PROFILE["refuses"]:
            raise Unknown(f"{name}: '{part}': a profile runs {PROFILE['steps']} steps")
        if not (kind in kinds or base in kinds) or where and workload not in where:
            runs = ", ".join(f"{k}-{w}" for k in kinds for w in where) if where else ", ".join(f"{k}-" for k in kinds)
            raise Unknown(f"{name}: '{part}' is for {runs} runs only")
        if (other := taken.get(declared.get("group") or key)) is not None:
            raise Unknown(f"{name}: '{part}' conflicts with '{other}'")
        taken[declared.get("group") or key] = part
        chosen.append((key, number))
    return chosen


def assemble(name: str, kind: str, spec: dict, values: dict, chosen: list, about: str) -> dict:
    """The run's fields from its kind's command and its parts, in the order the name gives them."""
    run = {"name": name, "kind": kind, "needs": spec.get("needs", "").split(), "env": dict(spec.get("env", {})),
           "runner": dict(spec.get("runner", {})), "about": about}
    words = [fill(spec["cmd"], {key: expand(value) for key, value in values.items()})]
    for key, number in chosen:
        part = PARTS[key]
        if kind != "verl" and part.get("args"):  # verl's command takes only values (steps) from its parts
            words.append(fill(part["args"], number))
        run["needs"] += [need for need in part.get("needs", "").split() if need not in run["needs"]]
        run["env"].update(part.get("env", {}))
        run["runner"].update(part.get("runner", {}))
        run["about"] += ", " + fill(part["about"], number)
    if kind in ("kit", "prof") and os.environ.get("EXTRA", "").strip():
        words.append(os.environ["EXTRA"].strip())
    run["cmd"] = expand(" ".join(words))
    run["env"] = {key: expand(value) for key, value in run["env"].items()}
    return run


def lookup(name: str) -> dict:
    """Run NAME of the table; Unknown (one line) for any other name."""
    run = parse(name)
    if name not in {listed for runs in RUNS.values() for listed in runs}:
        raise Unknown(f"{name}: not in the table (a new run is one line in bench/catalogue.py's RUNS)")
    return run


def command(run: dict) -> str:
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in run["env"].items())
    return f"env {env} {run['cmd']}" if env else run["cmd"]


def queue_names(args: list[str]) -> list[str]:
    """The run names in bench/run.sh's arguments (A+B, A:B, NAME@GPUS)."""
    return [run.split("@")[0] for arg in args for run in re.split(r"[+:]", arg) if run]


def check() -> list[str]:
    """What is wrong with the table: names that do not parse or repeat, files their commands name that are missing."""
    problems, seen = [], set()
    for runs in RUNS.values():
        for name in runs:
            if name in seen:
                problems.append(f"{name}: listed twice")
            seen.add(name)
            try:
                run = lookup(name)
            except Unknown as error:
                problems.append(str(error))
                continue
            for word in command(run).split():
                path = word.split("=", 1)[-1]
                if re.fullmatch(r"[\w./-]+\.(py|sh|yaml)", path) and not path.startswith("/") \
                        and not (ROOT / path).is_file():
                    problems.append(f"{name}: its command names {path}, which is not there")
    models = (ROOT / "bench" / "random_model.py").read_text()
    problems += [f"shape {shape}: bench/random_model.py does not make {spec['model']}"
                 for shape, spec in SHAPES.items() if f'"{spec["model"].split("-tail")[0]}"' not in models]
    problems += [f"retired part {part} is also declared in PARTS" for part in RETIRED if part in PARTS]
    return problems


def print_list():
    print("bash bench/run.sh WAIT_S RUN...   (python bench/catalogue.py RUN: its command; --parts: what names mean)")
    width = max(len(name) for runs in RUNS.values() for name in runs)
    for figure, runs in RUNS.items():
        print(f"\n{figure}")
        for name in runs:
            print(f"  {name:<{width}}  {parse(name)['about']}")


def print_parts():
    print("kinds and workloads (KIND-WORKLOAD[-PART...]):")
    kinds = {f"{kind}-{'SHAPE[-TOKENS]' if workload == 'shape' else workload}": spec["about"]
             for (kind, workload), spec in COMMANDS.items()}
    kinds |= {"prof-NAME": f"{PROFILE['about']} kit-NAME", "vllmload-NAME": fill(VLLMLOAD["about"], {"run": "NAME"})}
    for label, about in kinds.items():
        print(f"  {label:<24} {about}")
    print("shapes:", ", ".join(f"{shape} ({spec['about']})" for shape, spec in SHAPES.items()))
    print("parts [where they apply]:")
    for part, spec in PARTS.items():
        where = ", ".join(f"{kind}-{spec.get('workloads', '')}" for kind in spec["kinds"].split())
        print(f"  {part:<12} {spec['about']} [{where}]")
    print("retired parts (refused):")
    for part, reason in RETIRED.items():
        print(f"  {part:<12} {reason}")
    print("environment:")
    for knob, about in KNOBS.items():
        print(f"  {knob:<24} {about}")


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    if args[0] == "--list":
        print_list()
    elif args[0] == "--parts":
        print_parts()
    elif args[0] == "--check":
        problems = check()
        print("\n".join(problems) if problems else
              f"{sum(len(runs) for runs in RUNS.values())} runs, each made of declared parts, their files present")
        return 1 if problems else 0
    elif args[0] == "--needs":  # bench/run.sh before it starts a queue: every name checked, then what they need
        runs = [lookup(name) for name in queue_names(args[1:])]
        if not runs:
            raise Unknown("no run named")
        needs = {f"model:{run['model']}" for run in runs if "model" in run}
        needs |= {need for run in runs for need in run["needs"]}
        print("\n".join(sorted(needs)))
    elif args[0] == "--vars" and len(args) == 2:  # bench/run.sh before each run: shell assignments
        run = lookup(args[1])
        fields = {"cmd": command(run), "python": run["cmd"].split()[0], "needs": " ".join(run["needs"]),
                  **{key: run["runner"].get(key, "") for key in ("engine_stats", "watch", "kill_after_step")}}
        print("\n".join(f"{key}={shlex.quote(value)}" for key, value in fields.items()))
    elif len(args) == 1 and not args[0].startswith("-"):
        print(command(lookup(args[0])))
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # --list | head ends quietly
    try:
        sys.exit(main(sys.argv[1:]))
    except Unknown as error:
        print(f"{error}; the runs: python bench/catalogue.py --list", file=sys.stderr)
        sys.exit(2)
