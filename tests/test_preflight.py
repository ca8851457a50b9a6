"""The checks before any worker starts (kit/setup/preflight.py): engine, estimator and loss names, the keys they
need, loggers, trl beside verl."""

import importlib.util

import pytest
from conftest import kit_config
from transformers import AutoConfig

from kit.errors import KitError
from kit.setup import preflight
from kit.setup.preflight import check_algorithm, check_engine, check_no_trl, check_tensor_parallel


def test_engine_choice_errors():
    check_engine(kit_config())
    # neither is installed for the tests, and there is no GPU
    with pytest.raises(KitError, match="needs vllm, which is not installed: pip install -e '.\\[vllm\\]'"):
        check_engine(kit_config("inference.engine=vllm"))
    with pytest.raises(KitError, match="needs sglang, which is not installed: pip install -e '.\\[sglang\\]'"):
        check_engine(kit_config("inference.engine=sglang"))
    with pytest.raises(KitError, match="unknown: choose one of hf, vllm, sglang"):
        check_engine(kit_config("inference.engine=tgi"))


def test_unknown_estimator_and_loss_list_the_valid_names():
    check_algorithm(kit_config())
    with pytest.raises(KitError, match="'grpoo' is unknown: choose one of gae|.*grpo, .*rloo"):
        check_algorithm(kit_config("algorithm.advantage_estimator=grpoo"))
    with pytest.raises(KitError, match="'ppo' is unknown: choose one of vanilla, .*gspo"):
        check_algorithm(kit_config("algorithm.policy_loss=ppo"))
    check_algorithm(kit_config("algorithm.advantage_estimator=gae"))


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.policy_loss=dro"], "needs algorithm.dro_beta > 0"),
    (["algorithm.advantage_estimator=gdpo"], "needs algorithm.gdpo_reward_keys"),
    (["algorithm.advantage_estimator=gdpo", "algorithm.gdpo_reward_keys=[a,b]", "algorithm.gdpo_reward_weights=[1]"],
     "has 1 weights for 2 gdpo_reward_keys"),
    (["algorithm.kl_ctrl.type=pid"], "kl_ctrl.type 'pid' is unknown"),
])
def test_keys_an_estimator_or_loss_needs_are_named(overrides, message):
    with pytest.raises(KitError, match=message):
        check_algorithm(kit_config(*overrides))


def test_loggers_are_known_and_installed():
    from kit.setup.preflight import check_loggers

    check_loggers(kit_config("logger=[console,file]"))
    with pytest.raises(KitError, match="logger 'tensorbord' is unknown: choose from wandb"):
        check_loggers(kit_config("logger=[tensorbord]"))
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(KitError, match=r"needs the tensorboard package: pip install -e '.\[tracking\]'"):
            check_loggers(kit_config("logger=[tensorboard]"))


def test_gae_without_a_critic_section_is_named():
    cfg = kit_config("algorithm.advantage_estimator=gae")
    del cfg.training["critic"]
    with pytest.raises(KitError, match="no training.critic section"):
        check_algorithm(cfg)


def test_trl_beside_verl_is_refused(tmp_path, monkeypatch):
    assert importlib.util.find_spec("trl") is None
    check_no_trl()
    (tmp_path / "trl").mkdir()
    (tmp_path / "trl" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KitError, match="trl is installed beside verl 0.9.1.*pip uninstall trl"):
        check_no_trl()


def test_tensor_parallel_size_must_divide_the_attention_heads(tiny_model_dir):
    # vLLM refuses SmolLM2-135M (9 heads) at tensor_parallel_size=2 deep inside its server, with a traceback
    heads = AutoConfig.from_pretrained(tiny_model_dir).num_attention_heads
    cfg = kit_config("inference.engine=vllm", "inference.tensor_parallel_size=2")
    hf_config = AutoConfig.from_pretrained(tiny_model_dir, num_attention_heads=9)
    with pytest.raises(KitError, match="tensor_parallel_size=2 must divide the model's 9 attention heads: use one of 1, 3, 9"):
        check_tensor_parallel(cfg, hf_config)
    check_tensor_parallel(cfg, AutoConfig.from_pretrained(tiny_model_dir, num_attention_heads=2 * heads))


def test_choosing_an_engine_that_cannot_load_gets_one_line(monkeypatch):
    cfg = kit_config("inference.engine=vllm", "num_gpus=1")
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: object())  # as if vllm were installed
    monkeypatch.setattr(preflight.torch.cuda, "device_count", lambda: 1)  # and a GPU visible
    with pytest.raises(KitError, match="verl 0.9.1 could not load its vllm server .*: pip install -e '.\\[vllm\\]'"):
        check_engine(cfg)
