import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

from kit.patches import cpu_platform  # noqa: E402, F401  (selects verl's CPU platform before verl loads)


@pytest.fixture(scope="session")
def tiny_model_dir():
    from kit.setup.models import resolve_model_path

    return resolve_model_path("embedded:tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def kit_config(*overrides):
    from kit.setup.config import load_config

    return load_config(str(ROOT / "config.yaml"), list(overrides))


def configured(model_dir, *overrides):
    """The kit's config and verl's, as algorithm.main builds them, for CPU workers."""
    from transformers import AutoConfig

    from kit.setup.hardware import resolve_hardware
    from kit.setup.verl_config import compose_verl_config, verl_overrides

    cfg = kit_config(*overrides)
    resolve_hardware(cfg, node_gpus=[0])
    cfg.model_context = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    return cfg, compose_verl_config(verl_overrides(cfg, model_dir, on_gpu=False))


def make_run(cfg, verl_cfg, workers, model_dir):
    """algorithm.Run as main() builds it, on workers already started; the actor's loss set for this config."""
    from transformers import AutoTokenizer
    from verl.trainer.ppo.core_algos import get_kl_controller
    from verl.utils.config import omega_conf_to_dataclass

    import algorithm
    import inference
    from kit.patches.on_policy import PPOLoss
    from kit.data.rewards import RewardScorer
    from kit.data.task import Task

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # The loss the actor worker builds at start-up from the config (KitWorker.init_model), for this config.
    workers.actor.set_loss_fn(PPOLoss(omega_conf_to_dataclass(verl_cfg.actor_rollout_ref.actor)))
    return algorithm.Run(cfg, verl_cfg, Task(cfg.env, cfg.data), tokenizer, RewardScorer(verl_cfg, tokenizer, cfg.reward.timeout), workers,
                         inference.start_engine(cfg, verl_cfg, workers), get_kl_controller(verl_cfg.algorithm.kl_ctrl), inference.load_tools(cfg, tokenizer))
