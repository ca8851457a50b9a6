"""env.py tasks without workers: environment classes and their bad returns, verl-format datasets, the
curriculum's promotion and resume state."""

import re
import subprocess
import sys
import time

import pandas
import pytest
import torch
from conftest import ROOT, kit_config

from kit.data.datasets import VerlDataset
from kit.data.task import VAL_SEED_BASE, Task, checked_batch, checked_step, start_messages
from kit.errors import KitError


def test_environment_task_draws_reproducible_start_states(monkeypatch):
    monkeypatch.chdir(ROOT)
    task = Task("examples/text_game/env.py")
    first = task.draw(4)
    state = task.state_dict()
    second = task.draw(4)
    task.load_state_dict(state)
    assert task.draw(4) == second != first  # a resumed run draws what the uninterrupted one would have
    assert all(seed < VAL_SEED_BASE for seed in first.prompts + second.prompts)
    assert task.draw(3, held_out=True).prompts == [VAL_SEED_BASE, VAL_SEED_BASE + 1, VAL_SEED_BASE + 2]
    game = task.environment()
    messages = start_messages(game, seed=5, timeout=5)
    assert [m["role"] for m in messages] == ["system", "user"]
    low_guess = "1" if game.secret > 1 else "2"
    assert checked_step(game, "hmm", timeout=5)[1:3] == (-0.1, False)
    assert checked_step(game, low_guess, timeout=5)[0].startswith("No, my number is")
    assert checked_step(game, f"It is {game.secret}.", timeout=5)[1:] == (1.0, True, {"success": True})


def test_conversation_scores_every_round(monkeypatch):
    monkeypatch.chdir(ROOT)
    chat = Task("examples/conversation/env.py").environment()
    start_messages(chat, seed=3, timeout=5)
    totals = [chat.total + sum(chat.additions[:i + 1]) for i in range(3)]
    assert checked_step(chat, str(totals[0]), timeout=5)[1:3] == (pytest.approx(1 / 3), False)
    observation, reward, done, _ = checked_step(chat, "0", timeout=5)
    assert reward == 0 and f"it is {totals[1]}" in observation and not done
    assert checked_step(chat, str(totals[2]), timeout=5)[1:] == (pytest.approx(1 / 3), True, {"success": False})


class Scripted:
    """An environment returning whatever the case gives from step()."""

    def __init__(self, result=None, first="start"):
        self.result, self.first = result, first

    def reset(self, seed):
        if self.first is ZeroDivisionError:
            raise ZeroDivisionError("division by zero")
        return self.first

    def step(self, action):
        return self.result


@pytest.mark.parametrize("result, message", [
    ("just text", "returned str: it must return (observation, reward, done, info)"),
    (("obs", 1.0, False), "returned tuple: it must return"),
    ((None, 1.0, False, {}), "an observation of type NoneType"),
    (("obs", float("nan"), False, {}), "returned the reward nan"),
    (("obs", "1", False, {}), "returned the reward '1'"),
    (("obs", 1.0, "yes", {}), "done must be True or False"),
    (("obs", 1.0, True, None), "info a dict"),
])
def test_bad_environment_steps_are_one_line_errors(result, message):
    with pytest.raises(KitError, match=re.escape(message)):
        checked_step(Scripted(result), "guess", timeout=5)


def test_bad_environment_resets_are_one_line_errors():
    with pytest.raises(KitError, match=r"reset\(seed\) returned int: it must return the first observation"):
        start_messages(Scripted(first=3), seed=0, timeout=5)
    with pytest.raises(KitError, match=r"Scripted.reset\(0\) raised ZeroDivisionError: division by zero: fix"):
        start_messages(Scripted(first=ZeroDivisionError), seed=0, timeout=5)


class Hanging:
    """An environment whose reset or step never returns (in time)."""

    def __init__(self, hang_in: str):
        self.hang_in = hang_in

    def reset(self, seed):
        time.sleep(60 if self.hang_in == "reset" else 0)
        return "start"

    def step(self, action):
        time.sleep(60)
        return "obs", 0.0, False, {}


def test_an_environment_that_hangs_stops_the_run_with_one_line_after_env_timeout():
    start = time.monotonic()
    with pytest.raises(KitError, match=re.escape("Hanging.reset(0) took longer than inference.env_timeout=0.2 s")):
        start_messages(Hanging("reset"), seed=0, timeout=0.2)
    with pytest.raises(KitError, match=re.escape("Hanging.step('guess') took longer than inference.env_timeout=0.2 s")):
        checked_step(Hanging("step"), "guess", timeout=0.2)
    assert time.monotonic() - start < 5  # the hung calls' daemon threads are left behind, not waited for


def test_a_task_file_needs_get_batch_or_an_environment(tmp_path):
    (tmp_path / "empty_env.py").write_text("X = 1\n")
    with pytest.raises(KitError, match="defines neither get_batch"):
        Task(str(tmp_path / "empty_env.py"))


@pytest.fixture(scope="module")
def verl_files(tmp_path_factory):
    """Files as verl's gsm8k preprocessing writes them (examples/dataset/make_data.py): 2,000 train, 200 test rows."""
    out = tmp_path_factory.mktemp("verl_files")
    subprocess.run([sys.executable, "examples/dataset/make_data.py", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    return out


def test_verls_data_keys_make_a_task_of_their_own(verl_files, tmp_path):
    data = kit_config(f"data.train_files=[{verl_files}/train.parquet,{verl_files}/train.parquet]",
                      f"data.val_files={verl_files}/test.parquet").data
    task = Task("no_env_file.py", data)  # env.py is not read
    assert task.has_validation and task.environment is None
    state = task.state_dict()
    first = task.draw(4)
    assert first.data_sources == ["openai/gsm8k"] * 4 and first.prompts[0][0]["role"] == "user"
    task.load_state_dict(state)
    assert task.draw(4).prompts == first.prompts  # the data cursor resumes exactly
    assert task.draw(8, held_out=True).ground_truths == task.draw(8, held_out=True).ground_truths
    with pytest.raises(KitError, match="data.val_files hold 200 rows, fewer than val_size=300: lower val_size"):
        task.draw(300, held_out=True)
    assert not Task("no_env_file.py", kit_config(f"data.train_files={verl_files}/train.parquet").data).has_validation
    frame = pandas.read_parquet(verl_files / "test.parquet").rename(columns={"prompt": "question"})
    frame.to_parquet(tmp_path / "renamed.parquet")
    renamed = kit_config(f"data.train_files={tmp_path}/renamed.parquet", "data.prompt_key=question").data
    assert Task("env.py", renamed).draw(2).prompts[0][0]["content"].endswith('after "####".')
    with pytest.raises(KitError, match="has no column 'query' \\(data.prompt_key\\)"):
        Task("env.py", kit_config(f"data.train_files={tmp_path}/renamed.parquet", "data.prompt_key=query").data)
    with pytest.raises(KitError, match="dataset file '.*missing.parquet' not found"):
        Task("env.py", kit_config(f"data.train_files={tmp_path}/missing.parquet").data)


def test_verls_files_are_scored_by_verls_own_scorer_unless_a_reward_is_named(verl_files, tiny_model_dir):
    from conftest import configured
    from transformers import AutoTokenizer
    from verl import DataProto

    from kit.rollout.batching import rollout_layout
    from kit.setup.models import resolve_model_path
    from kit.data.rewards import RewardScorer

    _, verl_cfg = configured(tiny_model_dir, f"data.train_files={verl_files}/train.parquet")
    assert verl_cfg.reward.custom_reward_function.path is None  # verl's default_compute_score
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2"))  # the tiny one has no '#'
    scorer = RewardScorer(verl_cfg, tokenizer, timeout=10.0)
    responses = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("so #### 42", "#### 41")]
    width = max(map(len, responses))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in responses])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses])
    prompts = torch.full((2, 3), 5)
    batch = DataProto.from_tensordict(rollout_layout(prompts, torch.ones_like(prompts), ids, mask))
    task = Task("env.py", kit_config(f"data.train_files={verl_files}/train.parquet").data)
    problems = task.draw(2)
    problems.ground_truths = ["42", "42"]
    _, accuracy = scorer.score(batch, problems)
    assert accuracy == [1.0, 0.0]  # gsm8k's rule: the number after ####
    _, named = configured(tiny_model_dir, f"data.train_files={verl_files}/train.parquet",
                          "reward.custom_reward_function.path=examples/dataset/reward.py")
    assert named.reward.custom_reward_function.path.endswith("examples/dataset/reward.py")


def test_verl_datasets_read_from_parquet_and_jsonl_alike(tmp_path):
    for fmt in ("parquet", "jsonl"):
        subprocess.run([sys.executable, "examples/dataset/make_data.py", "--format", fmt, "--out", str(tmp_path)],
                       cwd=ROOT, check=True, capture_output=True)
    parquet, jsonl = VerlDataset(tmp_path / "train.parquet"), VerlDataset(tmp_path / "train.jsonl")
    assert len(parquet) == len(jsonl) == 2000
    batch = parquet.batch([0, 5])
    assert batch == jsonl.batch([0, 5])
    assert batch["data_sources"] == ["openai/gsm8k"] * 2 and batch["prompts"][0][0]["role"] == "user"
    assert batch["extra_infos"][1]["index"] == 5 and batch["ground_truths"][0].isdigit()


@pytest.mark.parametrize("write, message", [
    (lambda p: pandas.DataFrame({"prompt": ["q"], "reward_model": [{"ground_truth": "1"}]}).to_parquet(p),
     "has no column\\(s\\) data_source"),
    (lambda p: pandas.DataFrame({"data_source": [], "prompt": [], "reward_model": []}).to_parquet(p), "has no rows"),
    (lambda p: pandas.DataFrame({"data_source": ["d"], "prompt": ["q"], "reward_model": [{"style": "rule"}]}).to_parquet(p),
     "row 0 has no reward_model.ground_truth"),
    (lambda p: p.write_bytes(b"PAR1 truncated"), "cannot be read"),
])
def test_bad_dataset_files_are_one_line_errors(tmp_path, write, message):
    path = tmp_path / "data.parquet"
    write(path)
    with pytest.raises(KitError, match=message):
        VerlDataset(path)


def test_curriculum_moves_up_and_resumes_at_its_level(monkeypatch):
    monkeypatch.chdir(ROOT)
    task = Task("examples/curriculum/env.py")
    assert all(int(a) < 10 for a in task.draw(4).prompts[0].rsplit("\n", 1)[1].rstrip(" =").split(" + "))
    levels = [task.on_step({"train/accuracy": 0.9})["curriculum/level"] for _ in range(5)]
    assert levels == [1, 1, 1, 1, 2]
    state = task.state_dict()
    task.on_step({"train/accuracy": 1.0})
    task.load_state_dict(state)
    assert task.on_step({"train/accuracy": 0.0}) == {"curriculum/level": 2}
    problem = task.draw(1).prompts[0].rsplit("\n", 1)[1]
    assert all(10 <= int(a) < 100 for a in problem.rstrip(" =").split(" + "))


def _get(prompts, truths):
    return lambda size: {"prompts": prompts, "ground_truths": truths}


@pytest.mark.parametrize("batch, message", [
    (_get(["a", "b"], ["1"]), "returned 2 prompts but 1 ground_truths"),
    (_get([], []), "returned no prompts"),
    (_get(["a"], ["1"]), "returned 1 prompts instead of 2"),
    (lambda size: ["a", "b"], "must return a dict with 'prompts' and 'ground_truths'"),
    (_get(["a", 3], ["1", "2"]), "returned the prompt 3"),
    (_get(["a", [{"role": "user"}]], ["1", "2"]), "a prompt is a string or a list of"),
    (_get(["a", "b"], ["1", float("nan")]), "missing ground truth"),
])
def test_bad_env_batches_are_one_line_errors(batch, message):
    with pytest.raises(KitError, match=message):
        checked_batch(batch, 2)


def test_default_task_splits_and_reward():
    import env
    import my_reward

    train, held_out = set(env.TRAIN), set(env.HELD_OUT)
    assert not train & held_out and len(held_out) > 128
    assert env.get_val_batch(16) == env.get_val_batch(16)  # the same problems every validation
    problems = checked_batch(env.get_batch, 8)
    prompts, truths = problems.prompts, problems.ground_truths
    a, b = prompts[0].rsplit("\n", 1)[1].rstrip(" =").split(" + ")
    assert truths[0] == str(int(a) + int(b)) and prompts[0].startswith(env.EXAMPLES)
    assert my_reward.compute_score(env.DATA_SOURCE, " 132\n45 + 17 = 62", "132") == 1.0
    assert my_reward.compute_score(env.DATA_SOURCE, " 122\n132", "132") == 0.0  # the first integer is graded
    assert my_reward.compute_score(env.DATA_SOURCE, " I don't know", "132") == 0.0


def test_daemon_threads_reuse_idle_threads_and_route_around_a_hung_call():
    import threading
    import time

    from kit.data.daemon_threads import DaemonThreads

    threads = DaemonThreads()
    names = {threads.submit(lambda: threading.current_thread().name).result(1) for _ in range(20)}
    assert len(names) == 1  # one after another: the same (daemon) thread each time
    assert threads.submit(lambda: threading.current_thread().daemon).result(1)
    release = threading.Event()
    hung = threads.submit(release.wait)  # holds its thread
    assert threads.submit(lambda: 7).result(1) == 7 and not hung.done()  # a new thread took the call
    failing = threads.submit(lambda: 1 / 0)
    time.sleep(0.05)
    assert isinstance(failing.exception(1), ZeroDivisionError)
    release.set()
    assert hung.result(1) is True
