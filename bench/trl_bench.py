"""The TRL side of the verl-kit vs TRL benchmark: Hugging Face TRL 1.16's GRPOTrainer on the kit's tasks.

usage:
  python bench/trl_bench.py throughput MODEL_DIR NEW_TOKENS OUT_JSON
  python bench/trl_bench.py learn MODEL_DIR OUT_JSON
  SMOKE=1 python bench/trl_bench.py ...    # CPU, a tiny random model built from MODEL_DIR's config, 2 steps

TRL must never be importable beside verl (verl 0.9.1 imports a class trl 1.x removed), so this runs in an
environment of its own, which needs nothing of the kit's:
  python -m venv /opt/trl && /opt/trl/bin/pip install trl==1.16.0
  /opt/trl/bin/python bench/trl_bench.py throughput /tmp/models/smollm2-135m 256 /tmp/trl_tput.json
(bench/run.sh's trl-* runs: TRL_PYTHON=/opt/trl/bin/python; bench/offline/ carries TRL as .gpu/trl.tar.xz.)

throughput: 64 prompts x 8 samples x NEW_TOKENS new tokens a step, chat prompts from bench/throughput_task.py (TASK)
  ("What is {a} + {b}? Answer with the number only."), bf16 weights, lr 1e-6, 4 steps; one generation of 512
  completions feeds one optimizer step. Then plain sampled `model.generate` on the first step's 512 rows.
learn: the kit's default task (env.py, my_reward.py, imported by path) on SmolLM2-135M-Instruct, 100 steps of
  16 prompts x 8, held-out greedy accuracy on get_val_batch(128) before training and every 10 steps.

TRL 1.16 settings chosen to match the kit's defaults (config.yaml, verl 0.9.1's actor optimizer):
  - batching: GRPOConfig derives steps_per_generation = gradient_accumulation_steps and generation_batch_size =
    per_device_train_batch_size x steps_per_generation, so ONE generate() call makes the whole step's batch
    and ONE optimizer step consumes it in gradient_accumulation_steps micro-batches of MICRO (default 32, the
    kit's training.actor.batch_size_per_gpu). The old log-probs are then the current ones (ratio 1), which TRL
    skips computing.
  - loss_type="dapo": token losses summed over the whole generation batch, divided by its number of completion
    tokens = verl's token-mean (TRL 1.16 scales it for gradient accumulation itself, no double division).
  - sampling: temperature 1.0, top_p 1.0, top_k 0 (TRL's "disabled"), so rollouts sample the plain policy.
  - beta 0 (no KL, no reference model), epsilon 0.2 (= clip_ratio), scale_rewards "group" (= GRPO's
    std-normalised advantage), constant lr, no warm-up, grad clip 1.0, AdamW betas (0.9, 0.999),
    weight_decay 0.01 (verl's actor default; HF Trainer exempts biases and norm weights from it, verl does not).
  - gradient_checkpointing off (the kit's default; TRL's own default is on): GRAD_CKPT=1 turns it on.
  - learn loads float32 weights with bf16 autocast (TRL's default way to load, and verl's fp32 master weights):
    AdamW on bf16 weights would round most 1e-5 updates away. LEARN_DTYPE=bfloat16 loads bf16 instead.
  - generation time: a timer around GRPOTrainer._generate_single_turn (the model.generate call of a rollout);
    the whole rollout phase (generate, decode, reward, advantages) is timed around
    _generate_and_score_completions. TRL's own profiling timings go only to wandb/mlflow/trackio.
"""

import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network on the GPU machine; also keeps TRL's telemetry quiet
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
import trl
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    TrainerCallback,
)
from trl import GRPOConfig, GRPOTrainer

ROOT = Path(__file__).resolve().parents[1]
SMOKE = os.environ.get("SMOKE") == "1"
GPU = torch.cuda.is_available() and not SMOKE
MICRO = int(os.environ.get("MICRO", "8" if SMOKE else "32"))  # completions per forward/backward micro-batch
GRAD_CKPT = os.environ.get("GRAD_CKPT") == "1"
TASK = os.environ.get("TASK", "bench/throughput_task.py")  # throughput's prompts (bench/long_tail_task.py: long ones)


def load_file(path: Path):
    """Import a plain Python file of the kit by path (env.py, my_reward.py: no verl import)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync():
    if GPU:
        torch.cuda.synchronize()


class Report:
    """The output JSON, rewritten after every phase so that a killed run keeps what it measured."""

    def __init__(self, path, **fields):
        self.path, self.data = Path(path), dict(fields)

    def phase(self, name, **fields):
        self.data.update(fields)
        print(json.dumps({"phase": name, **fields}), flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1))


# ---------------------------------------------------------------- model, data, reward

def load_model(model_dir, dtype):
    """The model and its tokenizer (pad = pad or eos, left padding); SMOKE: a 2-layer random model of that config."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    if SMOKE:
        config = AutoConfig.from_pretrained(model_dir)
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:2]
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to("cuda" if GPU else "cpu"), tokenizer


def as_dataset(batches):
    """Batches {'prompts', 'ground_truths'} as TRL rows, in order (shuffle_dataset=False keeps it)."""
    return Dataset.from_dict({"prompt": [p for b in batches for p in b["prompts"]],
                              "ground_truth": [g for b in batches for g in b["ground_truths"]]})


def make_reward(scorer, data_source):
    """A TRL reward function around the kit's compute_score (1 when the first integer is the answer)."""
    def first_integer(completions, ground_truth, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # chat or raw text
        return [scorer.compute_score(data_source, t, g) for t, g in zip(texts, ground_truth)]
    return first_integer


def grpo_args(**overrides):
    """GRPOConfig with the settings both modes share (see the module docstring for why each)."""
    settings = {
        "output_dir": tempfile.mkdtemp(prefix="trl_bench_"), "report_to": "none", "save_strategy": "no",
        "logging_steps": 1, "disable_tqdm": True, "bf16": GPU, "use_cpu": not GPU, "seed": 0,
        "shuffle_dataset": False, "per_device_train_batch_size": MICRO, "gradient_checkpointing": GRAD_CKPT,
        "temperature": 1.0, "top_p": 1.0, "top_k": 0, "beta": 0.0, "epsilon": 0.2, "loss_type": "dapo",
        "scale_rewards": "group", "lr_scheduler_type": "constant", "warmup_steps": 0, "max_grad_norm": 1.0,
        "weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.999,
    }
    return GRPOConfig(**{**settings, **overrides})


def check_one_generation_per_step(args, completions):
    """One generate() call of all the step's completions feeds exactly one optimizer step."""
    assert args.generation_batch_size == completions, (args.generation_batch_size, completions)
    assert args.steps_per_generation == args.gradient_accumulation_steps, args


# ---------------------------------------------------------------- timing

class StepClock(TrainerCallback):
    """Wall seconds of every optimizer step (previous step end to this step end, CUDA synchronised) and the
    train reward TRL logs for it."""

    def __init__(self):
        self.step_s, self.reward = [], []

    def on_train_begin(self, args, state, control, **kwargs):
        sync()
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        now = time.perf_counter()
        self.step_s.append(now - self.last)
        self.last = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.reward.append(logs["reward"])


def wrap_timer(trainer, method, count=None):
    """Replace trainer.METHOD by a timed call; returns the list of {'s': seconds, **count(args, result)}."""
    calls, inner = [], getattr(trainer, method)

    def timed(*args, **kwargs):
        sync()
        start = time.perf_counter()
        result = inner(*args, **kwargs)
        sync()
        calls.append({"s": time.perf_counter() - start, **(count(args, result) if count else {})})
        return result

    setattr(trainer, method, timed)
    return calls


def count_tokens(args, result):
    """_generate_single_turn(prompt_ids, ...) -> (completion_ids up to and with eos, logprobs)."""
    prompt_ids, completion_ids = args[0], result[0]
    return {"rows": len(completion_ids), "prompt_tokens": sum(map(len, prompt_ids)),
            "completion_tokens": sum(map(len, completion_ids))}


# ---------------------------------------------------------------- throughput

def throughput(model_dir, new_tokens, out):
    prompts, samples, steps = (4, 4, 2) if SMOKE else (64, 8, 4)
    model, tokenizer = load_model(model_dir, torch.bfloat16 if GPU else torch.float32)
    report = Report(out, framework="trl", trl_version=trl.__version__, model=Path(model_dir).name,
                    params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 1), prompts=prompts,
                    samples=samples, new_tokens=new_tokens, micro_batch=MICRO, gradient_checkpointing=GRAD_CKPT,
                    dtype=str(model.dtype), device=torch.cuda.get_device_name() if GPU else "cpu", smoke=SMOKE)
    report.phase("load")
    task, scorer = load_file(ROOT / TASK), load_file(ROOT / "my_reward.py")
    batches = [task.get_batch(prompts) for _ in range(steps)]
    args = grpo_args(gradient_accumulation_steps=prompts * samples // MICRO, num_generations=samples,
                     max_completion_length=new_tokens, learning_rate=1e-6, max_steps=steps)
    check_one_generation_per_step(args, prompts * samples)
    clock = StepClock()
    trainer = GRPOTrainer(model=model, reward_funcs=make_reward(scorer, task.DATA_SOURCE), args=args,
                          train_dataset=as_dataset(batches), processing_class=tokenizer, callbacks=[clock])
    gens = wrap_timer(trainer, "_generate_single_turn", count_tokens)
    rollouts = wrap_timer(trainer, "_generate_and_score_completions")
    if GPU:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    report.phase("grpo", **grpo_summary(clock.step_s, gens, rollouts))
    seconds = plain_generate(model, tokenizer, batches[0]["prompts"], samples, new_tokens)
    report.phase("plain_generate", plain_generate_s=round(seconds, 3),
                 plain_generate_tokens_per_s=round(prompts * samples * new_tokens / seconds, 1))


def grpo_summary(step_s, gens, rollouts):
    """Per-step lists and the means of steps 2.. (step 1 warms up)."""
    assert len(gens) == len(step_s), (len(gens), len(step_s))  # one generation per optimizer step

    def mean(xs):
        return statistics.mean(xs[1:])

    gen_s = [g["s"] for g in gens]
    completion = [g["completion_tokens"] for g in gens]
    total = [g["prompt_tokens"] + g["completion_tokens"] for g in gens]
    return {
        "step_s": [round(s, 3) for s in step_s], "step_s_mean": round(mean(step_s), 3),
        "generation_s": [round(s, 3) for s in gen_s], "generation_s_mean": round(mean(gen_s), 3),
        "rollout_phase_s_mean": round(mean([r["s"] for r in rollouts]), 3),
        "completion_tokens_per_step": completion, "prompt_tokens_per_step": [g["prompt_tokens"] for g in gens],
        "rollout_tokens_per_s": round(mean(completion) / mean(gen_s), 1),
        "update_tokens_per_s": round(mean(total) / (mean(step_s) - mean(gen_s)), 1),
        "mean_completion_tokens": round(sum(completion) / sum(g["rows"] for g in gens), 2),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if GPU else None,
    }


@torch.no_grad()
def plain_generate(model, tokenizer, prompts, samples, new_tokens):
    """Sampled model.generate of exactly new_tokens tokens on the prompts x samples rows; the second of two
    timed calls (the first warms up)."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    rows = {k: v.repeat_interleave(samples, 0) for k, v in enc.items()}
    config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    model.eval()
    for _ in range(2):
        sync()
        start = time.perf_counter()
        model.generate(**rows, generation_config=config)
        sync()
        seconds = time.perf_counter() - start
    return seconds


# ---------------------------------------------------------------- learn

class Validator(StepClock):
    """StepClock plus held-out greedy accuracy before training and every `every` steps; the validation time
    is left out of the step times, so sum(step_s) is training wall time."""

    def __init__(self, tokenizer, batch, scorer, data_source, every, report):
        super().__init__()
        self.tokenizer, self.batch, self.scorer, self.data_source = tokenizer, batch, scorer, data_source
        self.every, self.report, self.curve = every, report, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.validate(model, 0)
        super().on_train_begin(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.validate(model, state.global_step)
            sync()
            self.last = time.perf_counter()  # the next step starts now: validation is not training time

    def validate(self, model, step):
        accuracy = held_out_accuracy(model, self.tokenizer, self.batch, self.scorer, self.data_source)
        self.curve.append({"step": step, "wall_s": round(sum(self.step_s), 2), "val_accuracy": round(accuracy, 4)})
        self.report.phase(f"val_step_{step}", curve=self.curve, train_reward=self.reward,
                          wall_s=round(sum(self.step_s), 2))


@torch.no_grad()
def held_out_accuracy(model, tokenizer, batch, scorer, data_source, max_new_tokens=8):
    """Greedy completions of the raw-text prompts, scored by the kit's reward (first integer)."""
    was_training = model.training
    model.eval()
    enc = tokenizer(batch["prompts"], return_tensors="pt", padding=True).to(model.device)
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    out = model.generate(**enc, generation_config=config)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    scores = [scorer.compute_score(data_source, t, g) for t, g in zip(texts, batch["ground_truths"])]
    return sum(scores) / len(scores)


def learn(model_dir, out):
    steps, prompts, samples, val_size, every = (2, 4, 4, 16, 1) if SMOKE else (100, 16, 8, 128, 10)
    dtype = getattr(torch, os.environ.get("LEARN_DTYPE", "float32"))
    model, tokenizer = load_model(model_dir, dtype)
    env, scorer = load_file(ROOT / "env.py"), load_file(ROOT / "my_reward.py")
    report = Report(out, framework="trl", trl_version=trl.__version__, model=Path(model_dir).name,
                    params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 1), prompts=prompts,
                    samples=samples, max_completion_length=8, lr=1e-5, loss_type="dapo", micro_batch=MICRO,
                    dtype=str(model.dtype), bf16_autocast=GPU, steps=steps,
                    device=torch.cuda.get_device_name() if GPU else "cpu", smoke=SMOKE)
    batches = [env.get_batch(prompts) for _ in range(steps)]  # the kit's training order: random.Random(0)
    completions = prompts * samples
    args = grpo_args(per_device_train_batch_size=min(MICRO, completions),
                     gradient_accumulation_steps=max(1, completions // MICRO), num_generations=samples,
                     max_completion_length=8, learning_rate=1e-5, max_steps=steps)
    check_one_generation_per_step(args, completions)
    validator = Validator(tokenizer, env.get_val_batch(val_size), scorer, env.DATA_SOURCE, every, report)
    trainer = GRPOTrainer(model=model, reward_funcs=make_reward(scorer, env.DATA_SOURCE), args=args,
                          train_dataset=as_dataset(batches), processing_class=tokenizer, callbacks=[validator])
    trainer.train()
    report.phase("learn", curve=validator.curve, train_reward=validator.reward, step_s=[round(s, 3) for s in
                 validator.step_s], wall_s=round(sum(validator.step_s), 2))


def main(argv):
    if len(argv) == 4 and argv[0] == "throughput":
        throughput(argv[1], int(argv[2]), argv[3])
    elif len(argv) == 3 and argv[0] == "learn":
        learn(argv[1], argv[2])
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
