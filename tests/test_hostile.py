"""Hostile and malformed input, and the kit's security promises: every case is one line naming the problem and
the fix (a KitError, printed as `verl-kit: error: ...` with status 2) or is handled in the loop, never a
traceback. In-process and fast; the cases other test files already hold are listed in docs/errors.md."""

import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import ray
import torch
from conftest import ROOT, configured, kit_config
from transformers import AutoTokenizer
from verl import DataProto
from verl.utils import tensordict_utils as tu

import algorithm
import inference
import my_tools
from kit.data.datasets import VerlDataset
from kit.data.rewards import RewardScorer
from kit.data.task import Problems, Task, checked_batch
from kit.errors import KitError
from kit.rollout.tools import ToolBox
from kit.run import checkpoints
from kit.setup.config import load_config
from kit.setup.models import resolve_model_path
from kit.setup.preflight import check_output_dir
from kit.worker import rollout_fields
from test_end_to_end import TINY

# ---- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("training.actor.lr=nan", "'training.actor.lr' must be a finite number, got nan"),
    ("inference.temperature=.inf", "'inference.temperature' must be a finite number, got inf"),
    ("algorithm.dro_beta=.nan", "'algorithm.dro_beta' must be null or a number > 0, got nan"),
    ("env=", "'env' must be a string, got None"),
    ("output_dir=null", "'output_dir' must be a string, got None"),
    ("inference.max_tool_output=0", "'inference.max_tool_output' must be a positive integer"),
    ("output_dir=config.yaml", "'output_dir' 'config.yaml' names a file: name a folder"),
])
def test_bad_config_values(override, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(KitError, match=message):
        check_output_dir(kit_config(override))  # output_dir: checked against the filesystem before the workers start


@pytest.mark.parametrize("content, message", [
    (b"- batch_size: 4\n", "must hold `key: value` lines, not a list"),
    (b"batch_size: 4 # \xff\n", "is not UTF-8 text: save it as UTF-8"),
    (None, "not found: run from the kit's folder"),  # a folder, not a file
])
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / "example.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(KitError, match=message):
        load_config(str(ROOT / "config.yaml"), [f"config={path}"])


def test_an_empty_config_file_changes_nothing(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert kit_config(f"config={tmp_path / 'empty.yaml'}") == kit_config()


def test_user_files_that_fail_to_import_are_one_line(tmp_path, monkeypatch, tiny_model_dir, tiny_tokenizer):
    monkeypatch.chdir(ROOT)
    (tmp_path / "broken_env.py").write_text("def get_batch(size)\n    return {}\n")
    with pytest.raises(KitError, match=r"env file '.*broken_env.py' failed to import \(SyntaxError: .*\): fix it"):
        Task(str(tmp_path / "broken_env.py"))
    (tmp_path / "broken_tools.py").write_text("import no_such_module\n")
    (tmp_path / "tools.yaml").write_text(f"tools:\n  - name: t\n    function: {tmp_path}/broken_tools.py:t\n")
    with pytest.raises(KitError, match="tool 1: tool file .* failed to import \\(ModuleNotFoundError"):
        ToolBox(str(tmp_path / "tools.yaml"), None, parser="hermes", timeout=1, max_calls=1, max_output=10)
    (tmp_path / "broken_reward.py").write_text("SCALE = 1 / 0\n")
    _, verl_cfg = configured(tiny_model_dir, f"reward.custom_reward_function.path={tmp_path}/broken_reward.py")
    with pytest.raises(KitError, match="broken_reward.py' failed to import \\(ZeroDivisionError: division by zero\\)"):
        RewardScorer(verl_cfg, tiny_tokenizer, timeout=1)


@pytest.mark.parametrize("overrides, message", [
    (["reward.custom_reward_function.path=no_such_reward.py"], "no_such_reward.py' not found: set reward.custom_reward_function"),
    (["inference.multi_turn=true", "inference.tools=no_such_tools.yaml"], "tools file 'no_such_tools.yaml' not found"),
    (["output_dir={tmp_path}/a_file/run"], "'output_dir' '{tmp_path}/a_file/run' lies under the file"),
    (["training.actor.lr=-1"], "config key 'training.actor.lr' must be a number > 0, got -1"),
    (["training.actor.clip_ratio=-0.1"], "config key 'training.actor.clip_ratio' must be a number > 0, got -0.1"),
    (["training.actor.kl_loss_coef=-1"], "config key 'training.actor.kl_loss_coef' must be a number >= 0, got -1"),
    (["training.actor.grad_clip=0"], "config key 'training.actor.grad_clip' must be a number > 0, got 0"),
    (["n_generations=1"], "'grpo' compares the responses to each prompt with each other, and n_generations=1"),
])
def test_bad_setup_stops_before_any_worker(tmp_path, monkeypatch, capsys, overrides, message):
    """Each is one line before Ray or a worker starts (an unwritable output_dir once failed in the run log after
    the workers started; a negative learning rate in torch's optimizer inside a worker)."""
    monkeypatch.chdir(ROOT)
    (tmp_path / "a_file").write_text("not a folder")
    overrides, message = [o.format(tmp_path=tmp_path) for o in overrides], message.format(tmp_path=tmp_path)
    ray_before = ray.is_initialized()
    with pytest.raises(SystemExit) as stop:
        algorithm.main([*TINY, "steps_per_epoch=1", f"output_dir={tmp_path}", *overrides])
    assert ray.is_initialized() == ray_before  # no Ray of the run's own was started
    stderr = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and message in stderr[-1] and stderr[-1].startswith("verl-kit: error: ")


def test_python_algorithm_py_prints_one_line_and_exits_2():
    result = subprocess.run([sys.executable, "algorithm.py", "training.actor.lr=nan"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("verl-kit: error: config key 'training.actor.lr' must be a "
                                                      "finite number, got nan")


# ---- data --------------------------------------------------------------------------------------------------

ROW = {"data_source": "d", "prompt": [{"role": "user", "content": "1 + 1 ="}], "reward_model": {"ground_truth": "2"}}


def write_jsonl(path, *rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("row, message", [
    ({**ROW, "reward_model": {"ground_truth": float("nan")}}, "row 1 has no reward_model.ground_truth"),
    ({**ROW, "prompt": [{"content": "no role"}]}, "row 1 has the prompt .*: a prompt is text or a list of"),
    ({**ROW, "prompt": None}, "row 1 has the prompt None"),
    ({**ROW, "extra_info": "index 3"}, "row 1 has the extra_info 'index 3': extra_info is a dict"),
    ({**ROW, "data_source": None}, "row 1 has the data_source None: give every row a name"),
])
def test_bad_dataset_rows_name_the_row(tmp_path, row, message):
    with pytest.raises(KitError, match=message):
        VerlDataset(write_jsonl(tmp_path / "data.jsonl", ROW, row))


def test_dataset_rows_without_extra_info_and_text_prompts_are_read(tmp_path):
    data = VerlDataset(write_jsonl(tmp_path / "data.jsonl", {**ROW, "extra_info": {"index": 0}}, {**ROW, "prompt": "2 ="}))
    assert data.batch([1, 0]) == {"prompts": ["2 =", ROW["prompt"]], "ground_truths": ["2", "2"],
                                  "data_sources": ["d", "d"], "extra_infos": [{}, {"index": 0}]}


@pytest.mark.parametrize("content, message", [
    (None, "dataset file '.*data.jsonl' not found: write it first"),
    (b"", "has no rows"),
    (b'{"data_source": "d\xff"}\n', "cannot be read \\(UnicodeDecodeError"),
])
def test_missing_empty_and_non_utf8_dataset_files(tmp_path, content, message):
    if content is not None:
        (tmp_path / "data.jsonl").write_bytes(content)
    with pytest.raises(KitError, match=message):
        VerlDataset(tmp_path / "data.jsonl")


def test_a_get_batch_that_raises_is_one_line():
    def get_batch(size):
        return {"prompts": [row["question"] for row in [{"q": "1 + 1 ="}] * size], "ground_truths": ["2"] * size}

    with pytest.raises(KitError, match=r"get_batch\(2\) raised KeyError: 'question': fix it \(or its data\)"):
        checked_batch(get_batch, 2)


def test_a_prompt_that_is_not_unicode_text_is_named(tmp_path):
    """A JSON '\\udcff' escape (or bytes read with errors='surrogateescape') is a string tokenizers refuse."""
    data = VerlDataset(write_jsonl(tmp_path / "data.jsonl", {**ROW, "prompt": "caf\udce9 ="}))
    with pytest.raises(KitError, match="returned a prompt that is not valid Unicode text .*: decode your data as UTF-8"):
        checked_batch(lambda size: data.batch(range(size)), 1)


# ---- rewards -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_scorer(tiny_model_dir, tiny_tokenizer):
    cfg, verl_cfg = configured(tiny_model_dir, "model_path=embedded:tiny",
                               f"reward.custom_reward_function.path={ROOT}/tests/fixtures/bad_rewards.py",
                               "reward.custom_reward_function.name=hostile")
    return RewardScorer(verl_cfg, tiny_tokenizer, cfg.reward.timeout)


def score(scorer, tokenizer, truths, data_sources=None, extra_infos=None):
    """Scores and accuracies of one response (" 2") per ground truth."""
    n = len(truths)
    prompt = torch.tensor([tokenizer("1 + 1 =")["input_ids"]] * n)
    responses = torch.tensor([tokenizer(" 2")["input_ids"] + [tokenizer.eos_token_id]] * n)
    batch = DataProto.from_tensordict(rollout_fields(prompt, torch.ones_like(prompt), responses, tokenizer.eos_token_id))
    rows = Problems(["1 + 1 ="] * n, truths, data_sources or ["d"] * n, extra_infos or [{} for _ in truths])
    scores, accuracy = scorer.score(batch, rows)
    return scores.sum(-1).tolist(), accuracy


@pytest.mark.parametrize("returns, message", [
    ("nan", "returned nan: it must return a finite number"),
    ("inf", "returned inf: it must return a finite number"),
    ("none", "returned None: it must return a finite number"),
    ("text", "returned '1.0': it must return a finite number"),
    ("list", "returned [1.0, 0.0]: it must return a finite number or a dict with a numeric 'score' (one call per response)"),
    ("no_score", "raised KeyError: 'score'"),
    ("bad_acc", "returned 'acc': 'yes': the 'acc' of its dict must be a finite number or a bool"),
])
def test_bad_rewards_score_zero_counted_and_all_bad_is_one_line(hostile_scorer, tiny_tokenizer, capsys, returns, message):
    assert score(hostile_scorer, tiny_tokenizer, ["good", returns]) == ([1.0, 0.0], [1.0, 0.0])
    assert hostile_scorer.failed == 1 and message in capsys.readouterr().err
    with pytest.raises(KitError, match="reward function hostile in .*/tests/fixtures/bad_rewards.py " + re.escape(message)):
        score(hostile_scorer, tiny_tokenizer, [returns, returns])


def test_numpy_rewards_are_numbers(hostile_scorer, tiny_tokenizer):
    assert score(hostile_scorer, tiny_tokenizer, ["float32"]) == ([0.5], [0.5]) and hostile_scorer.failed == 0


def test_data_never_chooses_the_reward_code(hostile_scorer, tiny_tokenizer, tmp_path):
    """Whatever a row says (a data_source, reward_model or extra_info naming a file and function), the function
    called is the configured one; the file a row names is never imported."""
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n"
                                      "def compute_score(*args, **kwargs):\n    return 1.0\n")
    evil = {"path": str(tmp_path / "evil.py"), "name": "compute_score"}
    data = VerlDataset(write_jsonl(tmp_path / "data.jsonl", {**ROW, "data_source": f"{tmp_path}/evil.py",
                                                             "reward_model": {"ground_truth": "nan", **evil},
                                                             "extra_info": {"custom_reward_function": evil}}))
    rows = checked_batch(lambda size: data.batch(range(size)), 1)
    scores, _ = score(hostile_scorer, tiny_tokenizer, rows.ground_truths + ["good"], rows.data_sources + ["d"],
                      rows.extra_infos + [{}])
    assert scores == [0.0, 1.0] and hostile_scorer.failed == 1  # hostile() scored both: "nan" fails, "good" is 1
    assert not (tmp_path / "imported").exists()


# ---- multi-turn: environments and tools, with a scripted engine in place of the model ----------------------


class ScriptedEngine:
    """Stands in for the rollout engine: every model turn is the same text, then eos."""
    world_size = 1

    def __init__(self, tokenizer, text: str):
        self.ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        self.eos = tokenizer.eos_token_id

    def generate(self, request):
        ids = self.ids[:tu.get(request, "max_new_tokens")]
        responses = torch.tensor([ids] * len(request["input_ids"]))
        turn = rollout_fields(request["input_ids"], request["attention_mask"], responses, self.eos)
        turn["rollout_log_probs"] = torch.zeros(responses.shape)
        return turn


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2"))


def multi_turn_config(*overrides):
    cfg = kit_config("inference.multi_turn=true", *overrides)
    cfg.model_context = 8192
    return cfg


class Endless:
    """An environment whose episodes never end."""

    def reset(self, seed):
        return "Guess a number."

    def step(self, action):
        return "Again.", 0.25, False, {"success": False}


@pytest.mark.parametrize("overrides, turns", [
    (["inference.max_turns=3", "inference.max_response_length=200"], 3),  # cut at max_turns
    (["inference.max_turns=1000", "inference.max_response_length=30"], None),  # cut at max_response_length
])
def test_an_episode_that_never_ends_is_cut_at_the_limits(smollm2_tokenizer, overrides, turns):
    cfg = multi_turn_config(*overrides)
    batch = inference.generate(ScriptedEngine(smollm2_tokenizer, "5"), smollm2_tokenizer, [0], cfg, n=2, seed=0,
                               environment=Endless)
    played = batch.non_tensor_batch["turns"].tolist()
    assert played[0] == played[1] == turns if turns else 1 < played[0] == played[1] < 1000
    assert batch.non_tensor_batch["env_reward"].tolist() == [0.25 * played[0]] * 2  # the turn rewards so far
    assert batch.batch["responses"].shape == (2, cfg.inference.max_response_length)


HOSTILE_TOOLS = '''
def huge():
    return "x" * 10_000_000

def nan_reward():
    return {"text": "ok", "reward": float("nan")}
'''


@pytest.fixture
def hostile_tools(tmp_path, monkeypatch, smollm2_tokenizer):
    monkeypatch.chdir(ROOT)
    (tmp_path / "hostile_tools.py").write_text(HOSTILE_TOOLS)
    entries = "".join(f"  - name: {name}\n    description: {name}\n    function: {tmp_path}/hostile_tools.py:{name}\n"
                      for name in ("huge", "nan_reward"))
    (tmp_path / "tools.yaml").write_text((ROOT / "tools.yaml").read_text() + entries)
    return str(tmp_path / "tools.yaml")


def hermes(name, arguments):
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'


def test_a_huge_tool_result_is_cut_and_marked(hostile_tools, smollm2_tokenizer):
    box = ToolBox(hostile_tools, smollm2_tokenizer, parser="hermes", timeout=5, max_calls=2, max_output=1000)
    [result] = box.run_calls(smollm2_tokenizer(hermes("huge", {}), add_special_tokens=False)["input_ids"])
    assert result.ok and result.text == "x" * 1000 + "\n[... 9999000 more characters cut]"
    cfg = multi_turn_config(f"inference.tools={hostile_tools}", "inference.max_turns=2",
                            "inference.max_response_length=2000", "inference.max_tool_output=1000")
    batch = inference.generate(ScriptedEngine(smollm2_tokenizer, hermes("huge", {})), smollm2_tokenizer, ["Go."], cfg,
                               n=1, seed=0, tools=inference.load_tools(cfg, smollm2_tokenizer))
    assert batch.non_tensor_batch["tool_calls"].tolist() == [2]  # the second result is not shown: max_turns ended it
    conversation = smollm2_tokenizer.decode(batch.batch["responses"][0][batch.batch["attention_mask"][0, -2000:].bool()])
    assert conversation.count("x" * 1000 + "\n[... 9999000 more characters cut]") == 1


@pytest.mark.parametrize("call, message", [
    (hermes("os.system", {"command": "touch pwned"}), "no tool named 'os.system'; the tools are calculator, huge"),
    (hermes("my_tools.py:calculator", {"expression": "1"}), "no tool named 'my_tools.py:calculator'"),
    (hermes("../my_tools", {"expression": "1"}), "no tool named '../my_tools'"),
    (hermes("calculator", {"expression": "1", "__class__": "x"}), "unknown argument '__class__'"),
    (hermes("calculator", {"expression": "__import__('os').system('touch pwned')"}), "calculator failed: ValueError: only"),
    (hermes("calculator", {"expression": "open('../../etc/passwd').read()"}), "calculator failed: ValueError: only"),
    (hermes("calculator", {"expression": "../../etc/passwd"}), "calculator failed: SyntaxError"),
    (hermes("calculator", {"expression": "1; rm -rf ~"}), "calculator failed: SyntaxError"),
    (hermes("calculator", {"expression": "$(touch pwned)"}), "calculator failed: SyntaxError"),
    (hermes("calculator", {"expression": "9" * 300}), "calculator failed: ValueError: expression longer than 200"),
    (hermes("calculator", {"expression": "10**10**10"}), "calculator failed: ValueError: only"),
    (hermes("nan_reward", {}), "nan_reward failed: it returned the reward nan"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}</tool_call>', "is not valid JSON"),
])
def test_hostile_tool_calls_become_error_messages(hostile_tools, smollm2_tokenizer, tmp_path, monkeypatch, call, message):
    box = ToolBox(hostile_tools, smollm2_tokenizer, parser="hermes", timeout=5, max_calls=2, max_output=1000)
    monkeypatch.chdir(tmp_path)  # where `touch pwned` would land
    [result] = box.run_calls(smollm2_tokenizer(call, add_special_tokens=False)["input_ids"])
    assert not result.ok and result.reward == 0 and result.text.startswith("error: ") and message in result.text, result
    assert not (tmp_path / "pwned").exists()


def test_the_calculator_never_evaluates_code(tmp_path):
    marker = tmp_path / "x"
    for expression in (f"__import__('os').system('touch {marker}')", "().__class__.__bases__[0].__subclasses__()",
                       "(lambda: 1)()", "eval('1')"):
        with pytest.raises(ValueError, match="only numbers"):
            my_tools.calculator(expression)
    assert not marker.exists() and my_tools.calculator("2 * (3 + 4)") == "14"


# ---- checkpoints and exports -------------------------------------------------------------------------------


def test_loop_state_loads_with_weights_only_and_restores_every_rng(tmp_path):
    cfg = kit_config(f"output_dir={tmp_path}")
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    with checkpoints.writing(cfg, 1, {"kl_coef": 0.5, "env": {"rng": random.Random(0).getstate(), "level": 2}}):
        pass
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    state = torch.load(tmp_path / "checkpoints" / "global_step_1" / "loop_state.pt", weights_only=True)
    checkpoints.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert state["kl_coef"] == 0.5 and state["env"]["level"] == 2


def test_a_loop_state_that_only_pickle_could_load_is_refused_at_save(tmp_path):
    cfg = kit_config(f"output_dir={tmp_path}")
    with pytest.raises(KitError, match="holds GLOBAL numpy.*, which torch.load\\(weights_only=True\\) refuses: env.py's "):
        with checkpoints.writing(cfg, 1, {"kl_coef": 0.5, "env": {"order": np.arange(3)}}):
            pass


def test_a_checkpoint_only_pickle_could_load_is_refused_at_resume(tmp_path):
    """One from before loop_state.pt was plain data, or a planted one: named, neither loaded nor deleted."""
    folder = tmp_path / "checkpoints" / "global_step_1"
    folder.mkdir(parents=True)
    torch.save({"step": 1, "rng": {"numpy": np.random.get_state()}, "files": {}}, folder / "loop_state.pt")
    with pytest.raises(KitError, match="global_step_1 holds GLOBAL numpy.*refuses: it comes from an older verl-kit"):
        checkpoints.find(kit_config(f"output_dir={tmp_path}", "resume=auto"))
    assert (folder / "loop_state.pt").is_file()


def test_checkpoints_are_private_and_a_writable_one_is_not_resumed(tmp_path):
    cfg = kit_config(f"output_dir={tmp_path}", "resume=auto")
    umask = os.umask(0)  # the most open umask: the kit's own modes must hold anyway
    try:
        with checkpoints.writing(cfg, 1, {"kl_coef": 0.5, "env": None}) as folder:
            os.makedirs(f"{folder}/actor")
            torch.save({"w": torch.ones(2)}, f"{folder}/actor/model.pt")
    finally:
        os.umask(umask)
    root = tmp_path / "checkpoints"
    modes = {path.name: path.stat().st_mode & 0o777 for path in [root, *root.rglob("*")]}
    assert modes == {"checkpoints": 0o700, "global_step_1": 0o700, "actor": 0o700, "model.pt": 0o600, "loop_state.pt": 0o600}
    assert checkpoints.find(cfg) == root / "global_step_1"
    (root / "global_step_1" / "actor" / "model.pt").chmod(0o666)
    with pytest.raises(KitError, match="could have been written by another user .*model.pt is group- or world-writable"):
        checkpoints.find(cfg)
