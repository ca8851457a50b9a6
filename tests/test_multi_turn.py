"""Multi-turn episodes and tool calls: the tools (kit/rollout/tools.py) on their own, then whole conversations on
real CPU workers with the tiny model."""

import json

import pytest
import ray
import torch
from conftest import ROOT, kit_config
from transformers import AutoTokenizer
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser

import inference
import my_tools
import training
from kit.data.rewards import RewardScorer
from kit.data.task import Task
from kit.errors import KitError
from kit.rollout.tools import ToolBox, load_tools
from kit.setup.hardware import resolve_hardware
from kit.setup.models import resolve_model_path
from kit.setup.verl_config import compose_verl_config, verl_overrides


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2"))


def calls(box, tokenizer, text):
    return [(r.text, r.ok) for r in box.run_calls(tokenizer(text, add_special_tokens=False)["input_ids"])]


def hermes(name, arguments):
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'


def test_calculator_computes_and_never_runs_code():
    assert my_tools.calculator("123 * 456") == "56088" and my_tools.calculator("(1 + 2) / 4") == "0.75"
    for expression in ("__import__('os').system('true')", "2 ** 10", "x + 1", "[1] * 3"):
        with pytest.raises(ValueError, match="only numbers"):
            my_tools.calculator(expression)


def test_every_bad_call_becomes_a_message_for_the_model(smollm2_tokenizer, monkeypatch):
    monkeypatch.chdir(ROOT)
    box = ToolBox("tools.yaml", smollm2_tokenizer, parser="hermes", timeout=2, max_calls=2, max_output=4096)
    tok = smollm2_tokenizer
    assert calls(box, tok, "I will compute. " + hermes("calculator", {"expression": "123*456"})) == [("56088", True)]
    assert calls(box, tok, "no call, just an answer: 42") == []
    for text, message in [
        ('<tool_call>{"name": calculator}</tool_call>', "is not valid JSON"),
        (hermes("calc", {"expression": "1"}), "no tool named 'calc'; the tools are calculator"),
        (hermes("calculator", {"expression": 5}), "argument 'expression' must be a string, got 5"),
        (hermes("calculator", {}), "missing argument(s) expression"),
        (hermes("calculator", {"expression": "1", "x": 2}), "unknown argument 'x'"),
        (hermes("calculator", {"expression": "import os"}), "calculator failed: SyntaxError"),
        (hermes("calculator", {"expression": "1/0"}), "calculator failed: ZeroDivisionError"),
    ]:
        [(result, ok)] = calls(box, tok, text)
        assert not ok and result.startswith("error: ") and message in result, result
    three = calls(box, tok, hermes("calculator", {"expression": "1"}) * 3)
    assert three[:2] == [("1", True)] * 2 and "3 tool calls in one turn; at most 2 run" in three[2][0]


def test_a_tool_that_hangs_times_out(smollm2_tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "tools.yaml").write_text(
        "tools:\n  - name: sleepy\n    description: sleeps\n    parameters:\n      seconds: {type: number}\n"
        "    function: tests/fixtures/slow_tools.py:sleepy\n")
    box = ToolBox(str(tmp_path / "tools.yaml"), smollm2_tokenizer, parser="hermes", timeout=0.2, max_calls=1, max_output=4096)
    assert calls(box, smollm2_tokenizer, hermes("sleepy", {"seconds": 0.01})) == [("awake", True)]
    [(result, ok)] = calls(box, smollm2_tokenizer, hermes("sleepy", {"seconds": 2}))
    assert not ok and "took longer than 0.2 s" in result


def test_verl_tool_yaml_and_tool_rewards(smollm2_tokenizer, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "fixtures"))
    box = ToolBox("tests/fixtures/tools_verl_and_kit.yaml", smollm2_tokenizer, parser="hermes", timeout=2, max_calls=2, max_output=4096)
    assert [s["function"]["name"] for s in box.schemas] == ["calculator", "shout"]
    [result] = box.run_calls(smollm2_tokenizer(hermes("shout", {"text": "hi"}), add_special_tokens=False)["input_ids"])
    assert (result.text, result.ok, result.reward) == ("HI", True, 0.5)


@pytest.mark.parametrize("content, message", [
    ("tools:\n  - name: x\n", "needs name, description, parameters and function"),
    ("tools:\n  - name: x\n    function: nowhere.py:f\n", "must be FILE.py:NAME with an existing file"),
    ("tools:\n  - name: x\n    function: my_tools.py:nothing\n", "has no function 'nothing'"),
    ("tools:\n  - class_name: no.such.Tool\n    tool_schema: {}\n", "cannot build no.such.Tool"),
    ("tools: [", "is not valid YAML"),
])
def test_bad_tools_yaml_is_one_line(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(ROOT)
    (tmp_path / "tools.yaml").write_text(content)
    with pytest.raises(KitError, match=message):
        load_tools(str(tmp_path / "tools.yaml"))


@ToolParser.register("every_turn_calls")
class EveryTurnCalls(ToolParser):
    """Reads every model turn as a calculator call, so real (random) generations go through the tool path."""

    async def extract_tool_calls(self, responses_ids, tools=None):
        return "", [FunctionCall(name="calculator", arguments=json.dumps({"expression": str(len(responses_ids))}))]


@pytest.fixture(scope="module")
def conversation_setup(tiny_model_dir, tiny_tokenizer):
    cfg = kit_config("model_path=embedded:tiny", "num_cpu_workers=2", "inference.multi_turn=true", "inference.max_turns=3",
                     "inference.max_response_length=40", "inference.max_tokens_per_turn=8",
                     "inference.tool_parser=every_turn_calls", f"inference.tools={ROOT}/tools.yaml")
    resolve_hardware(cfg, node_gpus=[0])
    cfg.model_context = 512
    workers = training.start_workers(cfg, compose_verl_config(verl_overrides(cfg, tiny_model_dir, on_gpu=False)))
    yield cfg, workers, tiny_tokenizer, inference.load_tools(cfg, tiny_tokenizer)
    ray.shutdown()


def test_conversations_train_only_the_models_tokens_with_their_sampled_log_probs(conversation_setup, monkeypatch):
    cfg, workers, tok, tools = conversation_setup
    monkeypatch.chdir(ROOT)
    prompts = [[{"role": "user", "content": "What is 12 * 34?"}], "Compute 5 + 6 ="]  # chat and raw text
    batch = inference.generate(workers.actor, tok, prompts, cfg, n=3, seed=0, tools=tools)  # 6 rows: 2 workers, odd turns
    b, stats = batch.batch, batch.non_tensor_batch
    assert b["responses"].shape == (6, 40)
    trained, attended = b["response_mask"].bool(), b["attention_mask"][:, b["prompts"].shape[1]:].bool()
    assert (trained <= attended).all() and (stats["tool_calls"] > 0).all()
    assert (attended & ~trained).any(dim=1).all()  # every episode has tool tokens, left out of the loss
    assert all(turns == calls + 1 or turns == calls for turns, calls in zip(stats["turns"], stats["tool_calls"]))
    # The trainer's forward over the whole conversation gives the sampler's log-probs on the sampled tokens:
    # nothing was re-tokenised between turns.
    old = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    assert torch.allclose(old[trained], b["rollout_log_probs"][trained], atol=1e-5)
    metrics = inference.episode_metrics(batch)
    assert metrics["episode/well_formed_call_share"] == 1.0 and metrics["episode/tool_errors"] == 0


class WithoutLogProbs:
    """The hf engine's turns without the sampler's log-probs and entropy: what vllm and sglang return with
    inference.engine_log_probs=false (they never return entropy)."""

    def __init__(self, engine):
        self.engine, self.world_size = engine, engine.world_size

    def generate(self, request):
        return self.engine.generate(request).exclude("rollout_log_probs", "rollout_entropy")


def test_conversations_from_an_engine_without_log_probs(conversation_setup, monkeypatch):
    cfg, workers, tok, tools = conversation_setup
    monkeypatch.chdir(ROOT)
    full = inference.generate(workers.actor, tok, ["Compute 5 + 6 ="], cfg, n=2, seed=1, tools=tools)
    bare = inference.generate(WithoutLogProbs(workers.actor), tok, ["Compute 5 + 6 ="], cfg, n=2, seed=1, tools=tools)
    for key in ("responses", "response_mask", "attention_mask"):
        assert torch.equal(bare.batch[key], full.batch[key]), key
    assert not {"rollout_log_probs", "rollout_entropy"} & set(bare.batch.keys())  # no zeros standing in for them


def test_environment_episodes_sum_turn_rewards_and_train_only_the_models_tokens(conversation_setup, tiny_model_dir,
                                                                                 monkeypatch):
    cfg, workers, tok, _ = conversation_setup
    monkeypatch.chdir(ROOT)
    task = Task("examples/text_game/env.py")
    starts = task.draw(2)
    batch = inference.generate(workers.actor, tok, starts.prompts, cfg, n=3, seed=0, environment=task.environment)
    b, stats = batch.batch, batch.non_tensor_batch
    assert b["responses"].shape == (6, 40) and (b["prompts"][0] == b["prompts"][2]).all()  # 3 episodes per start
    trained, attended = b["response_mask"].bool(), b["attention_mask"][:, b["prompts"].shape[1]:].bool()
    assert (trained <= attended).all() and (1 <= stats["turns"]).all() and (stats["turns"] <= 3).all()
    for row in range(6):  # the game's replies are in the conversation, outside the loss
        replies = tok.decode(b["responses"][row][attended[row] & ~trained[row]])
        assert stats["turns"][row] == 1 or "number" in replies, replies
    # Turn rewards summed: -0.1 per wrong guess, 1 for the right one; scored on each episode's last token.
    success, turns = stats["env_success"].astype(float), stats["turns"].astype(float)
    assert torch.allclose(torch.tensor(stats["env_reward"].astype(float)), torch.tensor(success - 0.1 * (turns - success)))
    verl_cfg = compose_verl_config(verl_overrides(cfg, tiny_model_dir, on_gpu=False))
    scorer = RewardScorer(verl_cfg, tok, cfg.reward.timeout)
    scores, accuracy = scorer.episode_scores(batch)  # (6, 40)
    assert torch.allclose(scores.sum(-1), torch.tensor(stats["env_reward"].astype(float), dtype=torch.float32))
    assert accuracy == success.tolist()
    old = training.compute_log_probs(workers, batch, cfg).batch["old_log_probs"]
    assert torch.allclose(old[trained], b["rollout_log_probs"][trained], atol=1e-5)
