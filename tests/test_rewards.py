"""Rewards through verl's reward manager (kit/data/rewards.py): scoring with no current event loop, and reward
calls that fail or hang on some responses."""

import pytest
import torch


def test_rewards_score_with_no_current_event_loop(tiny_model_dir, tiny_tokenizer):
    """verl's server managers (vllm/sglang engines) leave the main thread without a current asyncio loop;
    scoring must still work (it failed on the GPU before the gather moved inside the loop)."""
    import asyncio

    from conftest import configured
    from verl import DataProto

    from kit.data.rewards import RewardScorer
    from kit.data.task import Problems
    from kit.worker import rollout_fields

    cfg, verl_cfg = configured(tiny_model_dir, "model_path=embedded:tiny")
    scorer = RewardScorer(verl_cfg, tiny_tokenizer, cfg.reward.timeout)
    prompt = torch.tensor([tiny_tokenizer("What is 2 + 3?")["input_ids"]] * 2)
    answers = [tiny_tokenizer(text)["input_ids"] + [tiny_tokenizer.eos_token_id] for text in (" 5", " 7")]
    width = max(len(ids) for ids in answers)
    responses = torch.tensor([ids + [tiny_tokenizer.pad_token_id] * (width - len(ids)) for ids in answers])
    batch = DataProto.from_tensordict(rollout_fields(prompt, torch.ones_like(prompt), responses, tiny_tokenizer.eos_token_id))
    asyncio.set_event_loop(None)
    scores, accuracy = scorer.score(batch, Problems(["What is 2 + 3?"] * 2, ["5", "5"], ["arithmetic"] * 2, [{}, {}]))
    assert accuracy == [1.0, 0.0] and scores.sum(-1).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("name, failure", [("raises_on_some", "raised ValueError: cannot parse the answer"),
                                           ("hangs_on_some", "took longer than reward.timeout=0.5 s")])
def test_reward_calls_that_fail_on_some_responses_score_zero_and_are_counted(tiny_model_dir, tiny_tokenizer, capsys,
                                                                              name, failure):
    from conftest import configured
    from verl import DataProto

    from kit.data.rewards import RewardScorer
    from kit.data.task import Problems
    from kit.worker import rollout_fields

    cfg, verl_cfg = configured(tiny_model_dir, "model_path=embedded:tiny",
                               "reward.custom_reward_function.path=tests/fixtures/bad_rewards.py",
                               f"reward.custom_reward_function.name={name}")
    scorer = RewardScorer(verl_cfg, tiny_tokenizer, timeout=0.5)
    prompt = torch.tensor([tiny_tokenizer("What is 2 + 3?")["input_ids"]] * 3)
    answers = [tiny_tokenizer(text)["input_ids"] + [tiny_tokenizer.eos_token_id] for text in (" 5", " 7", " 5")]
    batch = DataProto.from_tensordict(rollout_fields(prompt, torch.ones_like(prompt), torch.tensor(answers),
                                                     tiny_tokenizer.eos_token_id))
    problems = Problems(["What is 2 + 3?"] * 3, ["5"] * 3, ["arithmetic"] * 3, [{}] * 3)
    scores, accuracy = scorer.score(batch, problems)
    assert scores.sum(-1).tolist() == [1.0, 0.0, 1.0] and accuracy == [1.0, 0.0, 1.0]
    assert scorer.failed == 1 and scorer.timed_out == (name == "hangs_on_some")
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and failure in warning[0] and "1 of 3 responses" in warning[0]
