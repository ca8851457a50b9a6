"""Every advantage estimator and policy loss verl 0.9.1 registers, and every example task, runs one real step
of the kit's loop (algorithm.train_step) on real CPU workers with a tiny model: rollouts, rewards,
advantages, update."""

import math

import pandas
import pytest
import ray
from conftest import ROOT, configured, kit_config, make_run
from verl.trainer.ppo import core_algos

import algorithm
import training
from kit.patches.on_policy import needs_old_log_probs
from kit.run.run_log import RunLog

BASE = [f"env={ROOT}/env.py", "model_path=embedded:tiny", "batch_size=4", "n_generations=4", "val_size=4", "logger=[]",
        "reward.custom_reward_function.path=tests/fixtures/shaped_rewards.py",
        "reward.custom_reward_function.name=digit_share"]
# The extra keys some of them need.
NEEDS = {
    "gdpo": ["algorithm.gdpo_reward_keys=[digits,short]", "reward.custom_reward_function.name=components"],
    "dro": ["algorithm.dro_beta=0.1"],
}


@pytest.fixture(scope="module")
def workers(tiny_model_dir, tmp_path_factory):
    """One CPU worker holding actor, reference and critic, shared by every case."""
    cfg, verl_cfg = configured(tiny_model_dir, *BASE, f"output_dir={tmp_path_factory.mktemp('w')}",
                               "algorithm.advantage_estimator=gae", "training.actor.use_kl_loss=true")
    yield training.start_workers(cfg, verl_cfg)
    ray.shutdown()


def one_step(workers, tiny_model_dir, tmp_path, *overrides) -> dict:
    cfg, verl_cfg = configured(tiny_model_dir, *BASE, f"output_dir={tmp_path}", *overrides)
    run = make_run(cfg, verl_cfg, workers, tiny_model_dir)
    with RunLog(cfg, total_steps=1) as log:
        return algorithm.train_step(run, log, step=1)


def assert_actor_updated(metrics):
    assert math.isfinite(metrics["actor/pg_loss"])
    assert metrics["actor/grad_norm"] > 0  # a real gradient reached the weights
    assert metrics["critic/advantages/max"] > metrics["critic/advantages/min"]  # (verl's name for the advantages)


@pytest.mark.parametrize("estimator", list(core_algos.ADV_ESTIMATOR_REGISTRY))
def test_every_estimator_updates_the_actor(workers, tiny_model_dir, tmp_path, estimator):
    metrics = one_step(workers, tiny_model_dir, tmp_path, f"algorithm.advantage_estimator={estimator}", *NEEDS.get(estimator, []))
    assert_actor_updated(metrics)
    if estimator == "gae":
        assert math.isfinite(metrics["critic/vf_loss"]) and metrics["critic/grad_norm"] > 0


@pytest.mark.parametrize("loss", list(core_algos.POLICY_LOSS_REGISTRY))
def test_every_policy_loss_updates_the_actor(workers, tiny_model_dir, tmp_path, loss):
    assert_actor_updated(one_step(workers, tiny_model_dir, tmp_path, f"algorithm.policy_loss={loss}", *NEEDS.get(loss, [])))


def test_kl_in_reward_and_loss_with_an_adaptive_controller(workers, tiny_model_dir, tmp_path):
    metrics = one_step(workers, tiny_model_dir, tmp_path, "algorithm.use_kl_in_reward=true", "training.actor.use_kl_loss=true",
                       "algorithm.kl_ctrl.type=adaptive", "training.actor.entropy_coeff=0.01", "training.actor.ppo_epochs=2",
                       "training.actor.mini_batch_size=2")
    assert_actor_updated(metrics)
    assert metrics["actor/reward_kl_penalty_coeff"] == 0.001  # the coefficient used; the controller moves after
    assert "actor/kl_loss" in metrics


def test_rollout_correction_weights_the_update(workers, tiny_model_dir, tmp_path):
    metrics = one_step(workers, tiny_model_dir, tmp_path, "algorithm.rollout_is=token")  # verl's truncated IS weights
    assert_actor_updated(metrics)
    # The hf engine samples with the trainer's own weights (fp32 on the CPU): its log-probs are the trainer's.
    assert metrics["rollout_corr/log_ppl_abs_diff"] < 1e-4


def test_critic_warmup_leaves_the_actor_alone(workers, tiny_model_dir, tmp_path):
    metrics = one_step(workers, tiny_model_dir, tmp_path, "algorithm.advantage_estimator=gae", "training.critic.warmup_steps=1")
    assert "critic/vf_loss" in metrics and "actor/pg_loss" not in metrics


TINY = ["model_path=embedded:tiny", "batch_size=4", "n_generations=4", "val_size=4", "logger=[]"]


@pytest.mark.parametrize("example, overrides", [
    ("text_game", ["inference.max_turns=3"]),
    ("conversation", []),
    ("dataset", ["inference.max_response_length=16"]),
    ("curriculum", []),
    ("tool_use", ["inference.max_tokens_per_turn=8", "inference.max_response_length=24"]),
])
def test_every_example_trains_and_validates(workers, tiny_model_dir, tmp_path, monkeypatch, example, overrides):
    monkeypatch.chdir(ROOT)  # examples name their files from the kit's folder
    cfg, verl_cfg = configured(tiny_model_dir, f"config=examples/{example}/config.yaml", *TINY, f"output_dir={tmp_path}",
                               *overrides)
    run = make_run(cfg, verl_cfg, workers, tiny_model_dir)
    with RunLog(cfg, total_steps=1) as log:
        metrics = algorithm.train_step(run, log, step=1)
        algorithm.validate(run, log, step=1)
    assert math.isfinite(metrics["actor/pg_loss"]) and math.isfinite(metrics["train/reward_mean"])
    validation = pandas.read_json(tmp_path / "metrics.jsonl", lines=True).iloc[-1]
    assert 0 <= validation["val/accuracy"] <= 1
    if run.task.environment is not None:
        assert 1 <= metrics["episode/turns"] <= cfg.inference.max_turns


@pytest.mark.parametrize("overrides, skipped", [
    ([], True),  # the default: one epoch, one mini-batch, hf
    (["training.actor.ppo_epochs=2"], False),
    (["training.actor.mini_batch_size=8"], False),  # two optimizer steps a step
    (["inference.engine=vllm"], True),  # the 'old' log-probs are the trainer's whichever engine sampled
    (["inference.engine=sglang"], True),
    (["inference.engine=vllm", "algorithm.rollout_is=token"], False),  # weights from the engine's and the trainer's
    (["algorithm.rollout_is=token"], False),
    (["algorithm.policy_loss=bypass_mode"], False),
    (["algorithm.use_kl_in_reward=true"], False),
    (["algorithm.advantage_estimator=optimal_token_baseline"], False),
    (["training.actor.use_kl_loss=true", "algorithm.advantage_estimator=gae"], True),  # a KL loss, a critic: still on-policy
])
def test_the_old_log_prob_pass_is_skipped_only_on_policy(overrides, skipped):
    assert needs_old_log_probs(kit_config(*overrides)) is (not skipped)
