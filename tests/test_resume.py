"""Checkpoints and resume: a run killed with SIGKILL continues as if it had never stopped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, kit_config
from test_end_to_end import TINY, run_kit

from kit.errors import KitError
from kit.run.run_log import outputs_written_after

SHAPED = ["reward.custom_reward_function.path=tests/fixtures/shaped_rewards.py",
          "reward.custom_reward_function.name=digit_share"]
# Adaptive KL in the reward, a cosine LR and two optimizer steps per step: every piece of state resume restores.
RUN = [*TINY, *SHAPED, "steps_per_epoch=4", "save_every=1", "val_every=2", "training.actor.lr=1e-3",
       "algorithm.use_kl_in_reward=true", "algorithm.kl_ctrl.type=adaptive", "algorithm.kl_ctrl.horizon=10",
       "training.actor.lr_schedule=cosine", "training.actor.mini_batch_size=2"]


def start_run(out, *overrides):
    """algorithm.py in the background, its output in files beside `out` (a pipe nobody reads could fill and stall it)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.txt", "w") as stdout, open(out / "stderr.txt", "w") as stderr:
        return subprocess.Popen([sys.executable, "algorithm.py", *overrides, f"output_dir={out}"], cwd=ROOT,
                                stdout=stdout, stderr=stderr, text=True, start_new_session=True)


def wait_for(process, path, text: str):
    """Until `text` appears in the file at `path` (a line of metrics.jsonl, a message on stderr)."""
    while not (path.exists() and text in path.read_text()):
        assert process.poll() is None, f"the run ended before {text!r}"
        time.sleep(0.05)


def wait_for_step(out, process, step: int):
    wait_for(process, out / "metrics.jsonl", f'"step": {step}, "train/')


def learning_metrics(out) -> dict:
    """Every logged metric but timings and memory/throughput figures, keyed by (step, name)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {(row["step"], key): value for row in rows for key, value in row.items()
            if key != "step" and not key.startswith(("timing/", "perf/")) and "mfu" not in key}


def test_killed_run_resumes_exactly(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_kit(*RUN, f"output_dir={straight}").returncode == 0

    process = start_run(killed, *RUN)
    wait_for_step(killed, process, 3)  # mid-run, likely mid-save
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    resumed = run_kit(*RUN, f"output_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    expected, got = learning_metrics(straight), learning_metrics(killed)
    assert got.keys() == expected.keys()
    assert got == expected
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["global_step_3", "global_step_4"]  # keep_last_n=2


FINISHED = [*TINY, "steps_per_epoch=2", "save_every=1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run of two steps, a checkpoint after each, exported: each test below changes a copy of it."""
    out = tmp_path_factory.mktemp("finished")
    assert run_kit(*FINISHED, f"output_dir={out}").returncode == 0
    return out


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")  # with the files' times, which tell a finished run
    return tmp_path / "run"


def test_finished_run_says_so_unless_killed_before_its_export(finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    args = [*FINISHED, f"output_dir={out}"]
    again = run_kit(*args)
    assert again.returncode == 0
    assert "this run already finished" in again.stdout
    assert "step 2 of 2" in again.stdout

    # What a SIGKILL after the last checkpoint leaves (bench/kill_resume.py hit it): the export half-written
    # under its scratch name, the plot older than the checkpoint. The rerun resumes and writes both.
    weights = (out / "hf_model" / "model.safetensors").read_bytes()
    (out / "hf_model").rename(out / ".hf_model.partial")
    os.utime(out / "metrics.png", (0, 0))
    resumed = run_kit(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "done: Hugging Face model" in resumed.stdout
    assert (out / "hf_model" / "model.safetensors").read_bytes() == weights
    assert outputs_written_after(out, out / "checkpoints" / "global_step_2") and not list(out.glob(".*"))


def test_a_run_is_finished_once_its_export_and_plot_follow_its_last_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "global_step_4"
    for path in (checkpoint / "loop_state.pt", tmp_path / "hf_model" / "config.json", tmp_path / "metrics.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    os.utime(checkpoint / "loop_state.pt", (100, 100))
    assert outputs_written_after(tmp_path, checkpoint)
    os.utime(tmp_path / "metrics.png", (50, 50))  # the plot of an earlier, shorter run; killed before this one's
    assert not outputs_written_after(tmp_path, checkpoint)
    (tmp_path / "metrics.png").touch()
    (tmp_path / "hf_model" / "config.json").unlink()  # killed mid-export
    assert not outputs_written_after(tmp_path, checkpoint)


def test_corrupt_checkpoint_is_skipped_and_a_mismatch_is_named(finished_run, tmp_path):
    out = copy_of(finished_run, tmp_path)
    args = [*TINY, "save_every=1", f"output_dir={out}"]
    newest = out / "checkpoints" / "global_step_2"
    weights = newest / "actor" / "model_world_size_1_rank_0.pt"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short

    mismatch = run_kit(*args, "steps_per_epoch=3", "model_path=embedded:smollm2")
    assert mismatch.returncode == 2
    assert "was made with model_path='embedded:tiny', this run has model_path='embedded:smollm2'" in mismatch.stderr
    assert "Traceback" not in mismatch.stderr

    resumed = run_kit(*args, "steps_per_epoch=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint {newest} is incomplete or corrupt: skipped" in resumed.stderr
    assert "resumed from" in resumed.stdout and "global_step_1 (step 1)" in resumed.stdout


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_resume_continues(tmp_path):
    process = start_run(tmp_path, *TINY, "steps_per_epoch=20", "save_every=0")
    wait_for_step(tmp_path, process, 1)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 0, stderr[-3000:]
    stopped = [line for line in stdout.splitlines() if line.startswith("stopped by SIGTERM after step ")]
    assert stopped and "Traceback" not in stderr
    step = int(stopped[0].split("after step ")[1].split(":")[0])
    assert (tmp_path / "checkpoints" / f"global_step_{step}").is_dir()  # written although save_every=0

    resumed = run_kit(*TINY, f"steps_per_epoch={step + 1}", "save_every=0", "val_every=0", f"output_dir={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {step})" in resumed.stdout


def test_a_second_signal_stops_at_once(tmp_path):
    process = start_run(tmp_path, *TINY, "steps_per_epoch=20", "save_every=0", "inference.max_response_length=48")
    wait_for_step(tmp_path, process, 1)
    process.send_signal(signal.SIGINT)
    wait_for(process, tmp_path / "stderr.txt", "SIGINT: finishing this step")  # taken, mid-step: now the second
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 128 + signal.SIGINT
    assert "SIGINT again: stopping now" in stderr and "Traceback" not in stderr
    assert not list(tmp_path.glob("checkpoints/global_step_*"))  # stopped before any checkpoint


def test_a_worker_killed_mid_step_is_one_line_and_resume_continues(tmp_path):
    import psutil

    process = start_run(tmp_path, *TINY, "steps_per_epoch=4", "save_every=1")
    wait_for_step(tmp_path, process, 2)
    workers = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith("ray::WorkerDict")]
    assert workers, "no Ray worker process found"
    for worker in workers:
        worker.kill()
    process.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("verl-kit: error: a Ray worker")

    resumed = run_kit(*TINY, "steps_per_epoch=4", "save_every=1", f"output_dir={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_complete(tmp_path):
    import errno

    from kit.run import checkpoints

    cfg = kit_config(f"output_dir={tmp_path}")
    with checkpoints.writing(cfg, 1, {"kl_coef": 0.0, "env": None}) as folder:
        torch.save({"w": torch.ones(3)}, f"{folder}/actor.pt")
    with pytest.raises(KitError, match="could not write the step-2 checkpoint .*No space left on device.*"
                                       "resume from global_step_1"):
        with checkpoints.writing(cfg, 2, {"kl_coef": 0.0, "env": None}) as folder:
            torch.save({"w": torch.ones(3)}, f"{folder}/actor.pt")
            raise OSError(errno.ENOSPC, "No space left on device")  # the disk fills mid-write
    cfg.resume = "auto"
    assert checkpoints.find(cfg).name == "global_step_1"  # still complete, and what resume takes
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["global_step_1"]  # no half-written folder


def test_a_checkpoint_of_another_worker_count_names_the_keys_that_set_it(tmp_path):
    from kit.run.checkpoints import check_matches

    cfg = kit_config("num_cpu_workers=1")
    cfg.num_workers = 1
    with pytest.raises(KitError, match="made by 2 workers and this run has 1: .* \\(num_gpus, num_cpu_workers, or the "
                                       "cluster's nodes\\)"):
        check_matches({"config": {"num_workers": 2}}, cfg, tmp_path, critic=False)
