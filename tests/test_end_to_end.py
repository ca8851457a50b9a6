"""`python algorithm.py` as a user runs it: real verl workers on Ray, CPU, a tiny model and the embedded SmolLM2."""

import json
import os
import re
import subprocess
import sys

import pandas
import pytest
import ray
from conftest import ROOT
from transformers import AutoModelForCausalLM, AutoTokenizer

import algorithm

TINY = ["model_path=embedded:tiny", "batch_size=4", "n_generations=4", "val_size=8", "inference.max_response_length=8"]


def run_kit(*overrides, timeout=600):
    return subprocess.run([sys.executable, "algorithm.py", *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_two_steps_on_a_tiny_model(tmp_path):
    out = tmp_path / "run"
    umask = os.umask(0)  # the most open umask: checkpoints must stay private and the export unwritable by others
    try:
        result = run_kit(*TINY, "num_cpu_workers=2", "steps_per_epoch=2", "val_every=1", "training.actor.use_kl_loss=true",
                         "inference.free_sampler=true", f"output_dir={out}")
    finally:
        os.umask(umask)
    assert result.returncode == 0, result.stderr[-3000:]
    # the console: one short line per step and per validation; the full metrics only in metrics.jsonl
    lines = result.stdout.splitlines()
    steps = [line for line in lines if re.match(r"step \d+: reward [\d.]+, accuracy [\d.]+, kl -?[\d.]+, response length "
                                                 r"[\d.]+, [\d.]+ s \(generation [\d.]+, .*update [\d.]+\)$", line)]
    assert [line.split(":")[0] for line in steps] == ["step 1", "step 2"], lines
    assert [line for line in lines if re.match(r"step \d: held-out accuracy [\d.]+, reward [\d.]+$", line)]
    assert max(len(line) for line in lines if line.startswith("step ")) < 160  # short lines,
    assert "train/entropy" not in result.stdout  # and no dump of every metric
    for noise in ("colocated worker base class", "Token authentication", "is_fx_tracing", "clean_up_tokenization"):
        assert noise not in result.stdout + result.stderr, noise
    checkpoints, export = out / "checkpoints", out / "hf_model"
    assert all(path.stat().st_mode & 0o077 == 0 for path in [checkpoints, *checkpoints.rglob("*")])
    assert all(path.stat().st_mode & 0o022 == 0 for path in [export, *export.rglob("*")])
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in export.rglob("*"))  # others may read it, weights too
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if "train/reward_mean" in row]
    assert [row["step"] for row in train] == [1, 2]
    # the sampler freed before each update and rebuilt with the new weights: it still samples the trainer's policy
    assert train[1]["rollout_corr/log_ppl_abs_diff"] < 1e-5
    for key in ("train/accuracy", "train/entropy", "actor/grad_norm", "actor/kl_loss", "response_length/mean",
                "timing/generation", "timing/reward", "timing/log_prob", "timing/update"):
        assert key in train[0], key
    assert [row["step"] for row in rows if "val/accuracy" in row] == [0, 1, 2]
    history = pandas.read_json(out / "metrics.jsonl", lines=True)  # the metrics history reads as a table
    assert list(history["step"]) == [0, 1, 1, 2, 2] and history["train/reward_mean"].notna().sum() == 2
    assert (out / "metrics.png").stat().st_size > 0
    assert (out / "checkpoints" / "global_step_2" / "loop_state.pt").is_file()
    model = AutoModelForCausalLM.from_pretrained(out / "hf_model")
    tokenizer = AutoTokenizer.from_pretrained(out / "hf_model")
    ids = tokenizer("2 + 2 =", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape[1] > ids.shape[1]


def test_one_step_on_the_embedded_smollm2_with_fused_log_probs(tmp_path):
    result = run_kit("batch_size=2", "n_generations=2", "val_size=2", "steps_per_epoch=1", "save_every=0",
                     "inference.max_response_length=8", "training.actor.fused_kernels=torch", f"output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(row for row in rows if "train/reward_mean" in row)
    # on-policy, the update's own (fused) log-probs are compared with the sampler's: equal in float32
    assert step["rollout_corr/log_ppl_abs_diff"] < 1e-4 and step["timing/log_prob"] < 0.1


@pytest.mark.parametrize("overrides, message", [
    (["model_path=/no/such/model"], "model_path '/no/such/model' does not exist"),
    (["num_cpu_workers=3"], "must both divide by the 3 workers"),
    (["algorithm.advantage_estimator=ppo"], "'ppo' is unknown: choose one of"),
    (["algorithm.policy_loss=clip"], "'clip' is unknown: choose one of vanilla"),
    (["inference.temprature=0.5"], "did you mean 'inference.temperature'"),
    (["algorithm.policy_loss=dro"], "'dro' needs algorithm.dro_beta > 0"),
    (["resume=/no/such/checkpoint"], "must be auto, off or a checkpoint folder"),
    (["env=no_such_env.py"], "env file 'no_such_env.py' not found"),
    (["inference.multi_turn=true", "inference.tools=tests/fixtures/shaped_rewards.py"], "is not valid YAML"),
    (["inference.multi_turn=true", "inference.tools=config.yaml"], "must hold a list under `tools:`"),
    (["reward.custom_reward_function.path=tests/fixtures/bad_rewards.py",
      "reward.custom_reward_function.name=missing"], "has no function 'missing'"),
])
def test_bad_setup_is_one_line_before_any_worker_starts(tmp_path, monkeypatch, capsys, overrides, message):
    """algorithm.main in this process (as `python algorithm.py` runs it): stopped with status 2 and one line."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        algorithm.main([*TINY, "steps_per_epoch=1", f"output_dir={tmp_path}", *overrides])
    assert stop.value.code == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.strip().splitlines()[-1].startswith("verl-kit: error: ")
    assert not ray.is_initialized()  # found before any worker started


def test_a_bad_reward_function_mid_run_is_one_line_without_traceback(tmp_path):
    """The whole run's path for a reward function that fails on every response; every other way a reward function
    can fail comes out as the same KitError from the scorer (test_hostile: bad_rewards_score_zero_counted)."""
    result = run_kit(*TINY, "steps_per_epoch=1", f"output_dir={tmp_path}",
                     "reward.custom_reward_function.path=tests/fixtures/bad_rewards.py",
                     "reward.custom_reward_function.name=raises")
    assert result.returncode == 2
    assert "raised ValueError: cannot parse the answer" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("verl-kit: error: ")


def test_verls_data_keys_train_on_verl_format_files(tmp_path):
    subprocess.run([sys.executable, "examples/dataset/make_data.py", "--out", str(tmp_path / "data")], cwd=ROOT,
                   check=True, capture_output=True)
    result = run_kit(*TINY, "steps_per_epoch=2", "save_every=0", f"output_dir={tmp_path / 'run'}",
                     f"data.train_files={tmp_path}/data/train.parquet", f"data.val_files={tmp_path}/data/test.parquet")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "val/accuracy" in row] == [0, 2]  # verl's val_files validate
    assert [row["step"] for row in rows if "train/reward_mean" in row] == [1, 2]
