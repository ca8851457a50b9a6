import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, kit_config
from omegaconf import OmegaConf

from kit.errors import KitError
from kit.setup.config import load_config
from kit.setup.hardware import LIGER_PACKAGES, resolve_hardware
from kit.setup.help import entries
from kit.setup.preflight import GROUP_ESTIMATORS, check_group_size, check_output_dir
from kit.setup.values import RANGES, in_range


def test_defaults_load_and_overrides_apply():
    cfg = kit_config("batch_size=4", "inference.temperature=0.9", "training.actor.lr=1e-5")
    assert cfg.batch_size == 4 and cfg.inference.temperature == 0.9 and cfg.training.actor.lr == 1e-5
    assert cfg.algorithm.advantage_estimator == "grpo"


def test_lora_target_modules_take_a_list():
    assert list(kit_config("training.actor.lora.target_modules=[q_proj,v_proj]").training.actor.lora.target_modules) == [
        "q_proj", "v_proj"]


def test_engine_kwargs_reach_verls_rollout_config_unchecked():
    from kit.setup.verl_config import compose_verl_config, verl_overrides

    cfg = kit_config("inference.engine=sglang", "inference.engine_kwargs.attention_backend=fa3")
    resolve_hardware(cfg, node_gpus=[1])
    cfg.model_context = 512
    rollout = compose_verl_config(verl_overrides(cfg, "model", on_gpu=True)).actor_rollout_ref.rollout
    assert rollout.engine_kwargs.sglang == {"attention_backend": "fa3"}


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(KitError, match="unknown config key 'inference.temprature': did you mean 'inference.temperature'"):
        kit_config("inference.temprature=0.9")
    with pytest.raises(KitError, match="did you mean 'batch_size'"):
        kit_config("batchsize=4")


@pytest.mark.parametrize("override, message", [
    ("batch_size=abc", "'batch_size' must be an integer"),
    ("inference.temperature=hot", "'inference.temperature' must be a number"),
    ("training.actor.use_kl_loss=maybe", "must be true or false"),
    ("batch_size=0", "'batch_size' must be a positive integer"),
    ("n_generations=-2", "'n_generations' must be a positive integer"),
    ("training.actor.max_tokens_per_gpu=0", "'training.actor.max_tokens_per_gpu' must be auto or a positive integer"),
    ("training.actor.max_tokens_per_gpu=lots", "'training.actor.max_tokens_per_gpu' must be auto or a positive integer"),
    ("inference.top_p=1.5", "'inference.top_p' must be a number in \\(0, 1\\]"),
    ("num_gpus=-1", "'num_gpus' must be auto or an integer"),
    ("inference=3", "must be a section of keys"),
    ("batch_size", "is not an override: write key=value"),
    ("reward.timeout=0", "'reward.timeout' must be a number > 0"),
    ("inference.tool_timeout=-1", "'inference.tool_timeout' must be a number > 0"),
    ("training.actor.lora.rank=-1", "'training.actor.lora.rank' must be an integer >= 0"),
    ("training.actor.lora.alpha=0", "'training.actor.lora.alpha' must be a number > 0"),
    ("training.actor.lora.target_modules=[]", "must be all-linear or a list of layer names"),
    ("training.actor.lr=-1", "'training.actor.lr' must be a number > 0, got -1"),
    ("training.actor.clip_ratio=-0.1", "'training.actor.clip_ratio' must be a number > 0, got -0.1"),
    ("training.actor.kl_loss_coef=-1", "'training.actor.kl_loss_coef' must be a number >= 0, got -1"),
    ("training.actor.grad_clip=0", "'training.actor.grad_clip' must be a number > 0, got 0"),
    ("training.actor.clip_ratio_c=0.5", "'training.actor.clip_ratio_c' must be a number > 1, got 0.5"),
    ("training.actor.clip_ratio_high=-0.2", "'training.actor.clip_ratio_high' must be null or a number > 0"),
    ("inference.max_tokens_per_turn=2.5", "'inference.max_tokens_per_turn' must be null or a positive integer"),
    ("algorithm.gamma=1.5", "'algorithm.gamma' must be a number in \\[0, 1\\], got 1.5"),
    ("seed=-1", "'seed' must be an integer >= 0"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(KitError, match=message):
        kit_config(override)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(KitError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: [1, 2\n")
    with pytest.raises(KitError, match="not valid YAML"):
        load_config(str(bad))


def test_hardware_resolution_and_batch_split():
    cfg = kit_config("num_cpu_workers=2")
    resolve_hardware(cfg, node_gpus=[0])
    assert cfg.num_gpus == 0 and cfg.num_workers == 2
    cfg = kit_config("num_gpus=auto")
    resolve_hardware(cfg, node_gpus=[8])
    assert cfg.num_workers == 8
    with pytest.raises(KitError, match="must both divide by the 3 workers"):
        resolve_hardware(kit_config("num_cpu_workers=3"), node_gpus=[0])
    with pytest.raises(KitError, match="2 GPU\\(s\\) are visible"):
        resolve_hardware(kit_config("num_gpus=4"), node_gpus=[2])


def test_liger_reaches_verls_model_config_on_gpus_and_is_refused_where_it_cannot_run(monkeypatch):
    import importlib.util

    from kit.setup.verl_config import compose_verl_config, verl_overrides

    installed = importlib.util.find_spec
    kernels = ("liger_kernel", "triton")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in kernels else installed(name))
    cfg = kit_config("training.actor.liger=true")
    resolve_hardware(cfg, node_gpus=[1])
    cfg.model_context = 512
    assert compose_verl_config(verl_overrides(cfg, "model", on_gpu=True)).actor_rollout_ref.model.use_liger
    with pytest.raises(KitError, match="Triton kernels, which need GPUs: set training.actor.liger=false on CPU"):
        resolve_hardware(kit_config("training.actor.liger=true"), node_gpus=[0])
    with pytest.raises(KitError, match="liger and inference.compile .* set one of them false"):
        resolve_hardware(kit_config("training.actor.liger=true", "inference.compile=true"), node_gpus=[1])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "liger_kernel" else installed(name))
    with pytest.raises(KitError, match=r"needs liger-kernel and triton; liger_kernel is not installed: pip install "
                                       r"liger-kernel==0\.8\.5"):
        resolve_hardware(kit_config("training.actor.liger=true"), node_gpus=[1])
    resolve_hardware(kit_config("training.actor.liger=false"), node_gpus=[1])  # off: nothing checked


def test_liger_auto_is_on_for_large_steps_on_gpus_with_the_package(monkeypatch):
    import importlib.util

    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in LIGER_PACKAGES else installed(name))

    def liger(*overrides, node_gpus=(1,)):
        cfg = kit_config(*overrides)
        resolve_hardware(cfg, node_gpus=list(node_gpus))
        return cfg.training.actor.liger

    large = ("batch_size=64", "inference.max_response_length=256")  # 64 x 8 x 256 = 131,072 response tokens a step
    assert liger(*large) is True
    assert liger() is False  # the default task: 16 x 8 x 8 tokens, where Liger only adds its compiling
    assert liger(*large, node_gpus=[0]) is False
    assert liger(*large, "inference.compile=true") is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "liger_kernel" else installed(name))
    assert liger(*large) is False
    with pytest.raises(KitError, match="'training.actor.liger' must be auto, true or false, got 'fast'"):
        kit_config("training.actor.liger=fast")


def test_workers_are_laid_out_node_by_node_on_a_cluster():
    def layout(node_gpus, *overrides):
        cfg = kit_config("ray_address=auto", *overrides)
        resolve_hardware(cfg, node_gpus=node_gpus)
        return list(cfg.worker_layout), cfg.num_workers

    assert layout([0]) == ([1], 1)  # the local case: one entry
    assert layout([4, 4]) == ([4, 4], 8) and layout([0, 4, 4]) == ([4, 4], 8)  # a CPU-only head gets none
    assert layout([4, 4], "num_gpus=4") == ([4], 4) and layout([4, 4], "num_gpus=2") == ([2], 2)
    assert layout([0, 0], "num_cpu_workers=2") == ([1, 1], 2)
    with pytest.raises(KitError, match="unequal GPU counts \\(4, 2\\): .* \\(ray start --num-gpus=N\\)"):
        layout([4, 2])
    with pytest.raises(KitError, match="num_gpus=6 must fill whole nodes of 4 GPUs"):
        layout([4, 4], "num_gpus=6")
    with pytest.raises(KitError, match="8 GPU\\(s\\) are in the Ray cluster's 2 nodes"):
        layout([4, 4], "num_gpus=16")
    with pytest.raises(KitError, match="num_cpu_workers=3 must divide by the Ray cluster's 2 nodes"):
        layout([0, 0], "num_cpu_workers=3")
    with pytest.raises(KitError, match="must both divide by the 8 workers"):  # the batch across every node's workers
        layout([4, 4], "batch_size=3", "n_generations=3")
    with pytest.raises(KitError, match="tensor_parallel_size=4 must divide the 2 GPUs each node trains on"):
        layout([2, 2], "inference.engine=vllm", "inference.tensor_parallel_size=4")
    with pytest.raises(KitError, match="config key 'ray_address' must be null"):
        kit_config("ray_address=''")


def test_every_key_in_config_yaml_has_a_comment():
    for line in (ROOT / "config.yaml").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"config.yaml line without a comment: {line!r}"


@pytest.mark.parametrize("override, message", [
    ("training.actor.mini_batch_size=3", "positive divisor of batch_size=16"),
    ("training.actor.lr_schedule=linear", "'training.actor.lr_schedule' must be one of constant, cosine; got 'linear'"),
    ("resume=/no/such/checkpoint", "must be auto, off or a checkpoint folder"),
    ("algorithm.dro_beta=high", "must be null or a number"),
    ("keep_last_n=0", "must be a positive integer"),
])
def test_training_and_resume_keys_are_checked(override, message):
    with pytest.raises(KitError, match=message):
        kit_config(override)


def test_resume_off_survives_yaml():
    assert kit_config("resume=off").resume == "off"


def test_a_config_file_overlays_config_yaml_and_overrides_win(tmp_path):
    (tmp_path / "example.yaml").write_text("batch_size: 4\ninference:\n  multi_turn: true\n  max_turns: 2\n")
    cfg = kit_config(f"config={tmp_path / 'example.yaml'}", "inference.max_turns=3")
    assert cfg.batch_size == 4 and cfg.inference.multi_turn is True and cfg.inference.max_turns == 3
    (tmp_path / "bad.yaml").write_text("inference:\n  max_turn: 2\n")
    with pytest.raises(KitError, match="did you mean 'inference.max_turns'"):
        kit_config(f"config={tmp_path / 'bad.yaml'}")


def test_help_lists_every_key_with_its_default_and_comment():
    from kit.setup.help import help_text

    text = help_text(str(ROOT / "config.yaml"))
    cfg = kit_config()
    keys = [key for key, _ in _leaves(cfg)]
    assert len(keys) > 60
    for key, value in _leaves(cfg):
        line = next((line for line in text.splitlines() if line.strip().startswith(f"{key} = ")), None)
        assert line is not None, key
        assert len(line.split(" = ", 1)[1].split()) > 1, f"{key}: no comment"  # the default, then what it does
    assert "usage: python algorithm.py" in text and "config=examples/" in text
    assert "max_tokens_per_gpu = auto" in text and "lower when out of memory" in text  # a continued comment


def test_help_narrows_to_a_prefix_and_names_a_close_key():
    from kit.setup.help import help_text

    text = help_text(str(ROOT / "config.yaml"), "inference")
    assert "inference.engine = hf" in text and "training.actor.lr = " not in text and "# vllm / sglang only" in text
    with pytest.raises(KitError, match="did you mean 'inference.engine'"):
        help_text(str(ROOT / "config.yaml"), "inference.engin")


def test_help_from_the_command_line():
    result = subprocess.run([sys.executable, "algorithm.py", "--help", "training.actor"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "training.actor.lr = 1.0e-5" in result.stdout


def _leaves(node, prefix=""):
    for key, value in node.items():
        if OmegaConf.is_dict(value):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_cpu_defaults_replace_only_the_keys_not_given(tmp_path):
    from kit.setup.config import cpu_defaults

    def on(visible_gpus, *overrides):
        cfg = kit_config(*overrides)
        resolve_hardware(cfg, node_gpus=[visible_gpus])
        return cpu_defaults(cfg, list(overrides)), cfg

    applied, cfg = on(0)
    assert applied == ["steps_per_epoch=15", "val_every=5"] and cfg.steps_per_epoch == 15 and cfg.val_every == 5
    applied, cfg = on(0, "steps_per_epoch=3")
    assert applied == ["val_every=5"] and cfg.steps_per_epoch == 3
    (tmp_path / "mine.yaml").write_text("val_every: 2\n")
    applied, cfg = on(0, f"config={tmp_path / 'mine.yaml'}")
    assert applied == ["steps_per_epoch=15"] and cfg.val_every == 2
    applied, cfg = on(1)  # a GPU: config.yaml's own defaults
    assert applied == [] and cfg.steps_per_epoch == 100
    applied, cfg = on(1, "num_gpus=0")  # CPU workers on a GPU machine
    assert applied == ["steps_per_epoch=15", "val_every=5"]
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text().replace("  val_every: 5", "  val_evry: 5"))
    with pytest.raises(KitError, match="unknown config key 'val_evry': did you mean 'val_every'"):
        load_config(str(tmp_path / "config.yaml"))


def test_every_numeric_key_has_its_range_in_the_check_and_in_config_yaml():
    """RANGES is the check's list; config.yaml's comment for each key states the same range, and no numeric key of
    config.yaml is left out of it."""
    keys = {e.key: e for e in entries(str(ROOT / "config.yaml")) if not e.note and e.default is not None}
    numeric = {key for key, e in keys.items() if type(yaml.safe_load(e.default)) in (int, float)}
    null_numbers = {key for key, spec in RANGES.items() if spec.startswith("null or")}
    assert numeric | null_numbers == set(RANGES) - {"num_gpus"}
    for key, spec in RANGES.items():
        stated = "any number" if spec == "any" else spec
        assert stated in keys[key].comment, f"config.yaml's comment for {key} does not state its range {stated}"
    assert kit_config() is not None  # and every default lies in its range


@pytest.mark.parametrize("value, spec, inside", [
    (0, "> 0", False), (0, ">= 0", True), (1, "> 1", False), (1.5, "> 1", True), (-3, "any", True),
    (0, "(0, 1]", False), (1, "(0, 1]", True), (0, "[0, 1]", True), (1.01, "[0, 1]", False)])
def test_ranges_read_as_written(value, spec, inside):
    assert in_range(value, spec) is inside


@pytest.mark.parametrize("estimator", GROUP_ESTIMATORS)
def test_a_group_estimator_with_one_response_per_prompt_is_one_line(estimator):
    with pytest.raises(KitError, match=f"'{estimator}' compares the responses to each prompt.*n_generations=1"):
        check_group_size(kit_config(f"algorithm.advantage_estimator={estimator}", "n_generations=1"))
    check_group_size(kit_config("algorithm.advantage_estimator=reinforce_plus_plus", "n_generations=1"))


def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(KitError, match="'output_dir' .* lies under the file .*a_file'.*: name a folder"):
        check_output_dir(kit_config(f"output_dir={tmp_path}/a_file/run"))
    with pytest.raises(KitError, match="'output_dir' .* names a file"):
        check_output_dir(kit_config(f"output_dir={tmp_path}/a_file"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: a read-only mount is the case root meets
        pytest.skip("this user can write any folder")
    with pytest.raises(KitError, match="cannot be written .*: name a folder you can write"):
        check_output_dir(kit_config(f"output_dir={locked}/run"))
    check_output_dir(kit_config(f"output_dir={tmp_path}/new/run"))  # missing folders are made later: fine


def test_old_reward_model_keys_still_work_with_a_note(capsys):
    cfg = kit_config("reward_model.timeout=3.5", "reward_model.custom_reward_function.name=other")
    assert cfg.reward.timeout == 3.5 and cfg.reward.custom_reward_function.name == "other"
    assert "note: config key 'reward_model.timeout' is now 'reward.timeout'" in capsys.readouterr().err
