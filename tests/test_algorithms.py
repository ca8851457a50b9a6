"""Every advantage estimator and policy loss verl 0.9.1 registers runs one real step of the kit's loop
(algorithm.train_step) on real CPU workers with a tiny model: rollouts, rewards, advantages, update."""

import math
from functools import partial

import pytest
import ray
from conftest import ROOT, kit_config
from transformers import AutoConfig, AutoTokenizer
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.core_algos import get_kl_controller
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.losses import ppo_loss

import algorithm
import training
from kit.config import resolve_hardware
from kit.rewards import RewardScorer
from kit.run_log import RunLog
from kit.task import load_env
from kit.verl_config import compose_verl_config, verl_overrides

BASE = ["model_path=embedded:tiny", "batch_size=4", "n_generations=4", "val_size=4", "logger=[]",
        "reward_model.custom_reward_function.path=tests/fixtures/shaped_rewards.py",
        "reward_model.custom_reward_function.name=digit_share"]
# The extra keys some of them need.
NEEDS = {
    "gdpo": ["algorithm.gdpo_reward_keys=[digits,short]", "reward_model.custom_reward_function.name=components"],
    "dro": ["algorithm.dro_beta=0.1"],
}


def configured(tiny_model_dir, tmp_path, *overrides):
    cfg = kit_config(*BASE, f"output_dir={tmp_path}", *overrides)
    resolve_hardware(cfg, visible_gpus=0)
    cfg.model_context = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    return cfg, compose_verl_config(verl_overrides(cfg, tiny_model_dir, on_gpu=False))


@pytest.fixture(scope="module")
def workers(tiny_model_dir, tmp_path_factory):
    """One CPU worker holding actor, reference and critic, shared by every case."""
    cfg, verl_cfg = configured(tiny_model_dir, tmp_path_factory.mktemp("w"), "algorithm.advantage_estimator=gae",
                               "training.actor.use_kl_loss=true")
    yield training.start_workers(cfg, verl_cfg)
    ray.shutdown()


def one_step(workers, tiny_model_dir, tmp_path, *overrides) -> dict:
    cfg, verl_cfg = configured(tiny_model_dir, tmp_path, *overrides)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # The loss the actor worker builds at start-up from the config (verl's init_model), for this config.
    workers.actor.set_loss_fn(partial(ppo_loss, config=omega_conf_to_dataclass(verl_cfg.actor_rollout_ref.actor)))
    run = algorithm.Run(cfg, verl_cfg, load_env(str(ROOT / "env.py")), tokenizer, RewardScorer(verl_cfg, tokenizer), workers,
                        get_kl_controller(verl_cfg.algorithm.kl_ctrl), tools=None)
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


def test_critic_warmup_leaves_the_actor_alone(workers, tiny_model_dir, tmp_path):
    metrics = one_step(workers, tiny_model_dir, tmp_path, "algorithm.advantage_estimator=gae", "training.critic.warmup_steps=1")
    assert "critic/vf_loss" in metrics and "actor/pg_loss" not in metrics
