"""Unit tests of the support package and the helpers in inference.py."""

import importlib.util

import pytest
import torch
from conftest import kit_config

import inference
from kit import cpu_platform
from kit.errors import KitError
from kit.models import resolve_model_path
from kit.on_policy import needs_old_log_probs
from kit.preflight import check_algorithm, check_no_trl
from kit.task import checked_batch


def test_cpu_platform_is_verls_platform_here():
    from verl.plugin.platform import get_platform
    from verl.utils.device import get_device_name, get_nccl_backend

    assert isinstance(get_platform(), cpu_platform.PlatformCPU)
    assert get_device_name() == "cpu" and get_nccl_backend() == "gloo"
    assert torch.ones(2).pin_memory().device.type == "cpu"  # no-op instead of an accelerator error
    device = get_platform().device_module
    assert device.memory_allocated() == 0 and device.get_device_name() == "CPU"


def test_cpu_platform_registers_verls_fsdp_engines():
    from verl.workers.engine import EngineRegistry

    cpu_platform.register_fsdp_engines()
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__ == "FSDPEngineWithLMHead"
    assert EngineRegistry.get_engine_cls("value_model", "fsdp2").__name__ == "FSDPEngineWithValueHead"


def test_model_path_errors(tmp_path):
    with pytest.raises(KitError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(KitError, match="without config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(KitError, match="could not be fetched from the hub"):
        resolve_model_path("no-such-org/no-such-model")


def test_tiny_model_is_a_hugging_face_folder(tiny_model_dir, tiny_tokenizer):
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir
    assert tiny_tokenizer.eos_token == "<|im_end|>" and tiny_tokenizer.chat_template


def test_encode_prompt_and_left_pad(tiny_tokenizer):
    text = inference.encode_prompt(tiny_tokenizer, "1 + 1 =")
    chat = inference.encode_prompt(tiny_tokenizer, [{"role": "user", "content": "1 + 1 ="}])
    assert text == tiny_tokenizer("1 + 1 =")["input_ids"]
    assert tiny_tokenizer.decode(chat).endswith("<|im_start|>assistant\n")
    ids, mask = inference.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_engine_choice_errors():
    inference.check_engine(kit_config())
    # neither is installed for the tests, and there is no GPU
    with pytest.raises(KitError, match="needs vllm, which is not installed: pip install -e '.\\[vllm\\]'"):
        inference.check_engine(kit_config("inference.engine=vllm"))
    with pytest.raises(KitError, match="needs sglang, which is not installed: pip install -e '.\\[sglang\\]'"):
        inference.check_engine(kit_config("inference.engine=sglang"))
    with pytest.raises(KitError, match="unknown: choose one of hf, vllm, sglang"):
        inference.check_engine(kit_config("inference.engine=tgi"))


def test_prompt_longer_than_the_context_is_an_error():
    cfg = kit_config("inference.max_response_length=10")
    cfg.model_context = 20
    inference.check_prompt_length([[1] * 10], cfg)
    with pytest.raises(KitError, match="exceeds the model's context of 20 tokens"):
        inference.check_prompt_length([[1] * 11], cfg)


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
    from kit.preflight import check_loggers

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


def test_rewards_score_with_no_current_event_loop(tiny_model_dir, tiny_tokenizer):
    """verl's server managers (vllm/sglang engines) leave the main thread without a current asyncio loop;
    scoring must still work (it failed on the GPU before the gather moved inside the loop)."""
    import asyncio

    from conftest import configured
    from verl import DataProto

    from kit.rewards import RewardScorer
    from kit.task import Problems
    from kit.worker import rollout_fields

    cfg, verl_cfg = configured(tiny_model_dir, "model_path=embedded:tiny")
    scorer = RewardScorer(verl_cfg, tiny_tokenizer, cfg.reward_model.timeout)
    prompt = torch.tensor([tiny_tokenizer("What is 2 + 3?")["input_ids"]] * 2)
    answers = [tiny_tokenizer(text)["input_ids"] + [tiny_tokenizer.eos_token_id] for text in (" 5", " 7")]
    width = max(len(ids) for ids in answers)
    responses = torch.tensor([ids + [tiny_tokenizer.pad_token_id] * (width - len(ids)) for ids in answers])
    batch = DataProto.from_tensordict(rollout_fields(prompt, torch.ones_like(prompt), responses, tiny_tokenizer.eos_token_id))
    asyncio.set_event_loop(None)
    scores, accuracy = scorer.score(batch, Problems(["What is 2 + 3?"] * 2, ["5", "5"], ["arithmetic"] * 2, [{}, {}]))
    assert accuracy == [1.0, 0.0] and scores.sum(-1).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("name, failure", [("raises_on_some", "raised ValueError: cannot parse the answer"),
                                           ("hangs_on_some", "took longer than reward_model.timeout=0.5 s")])
def test_reward_calls_that_fail_on_some_responses_score_zero_and_are_counted(tiny_model_dir, tiny_tokenizer, capsys,
                                                                              name, failure):
    from conftest import configured
    from verl import DataProto

    from kit.rewards import RewardScorer
    from kit.task import Problems
    from kit.worker import rollout_fields

    cfg, verl_cfg = configured(tiny_model_dir, "model_path=embedded:tiny",
                               "reward_model.custom_reward_function.path=tests/fixtures/bad_rewards.py",
                               f"reward_model.custom_reward_function.name={name}")
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


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_complete(tmp_path):
    import errno

    from kit import checkpoints

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


def test_daemon_threads_reuse_idle_threads_and_route_around_a_hung_call():
    import threading
    import time

    from kit.daemon_threads import DaemonThreads

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


def test_a_checkpoint_of_another_worker_count_names_the_keys_that_set_it(tmp_path):
    from kit.checkpoints import check_matches

    cfg = kit_config("num_cpu_workers=1")
    cfg.num_workers = 1
    with pytest.raises(KitError, match="made by 2 workers and this run has 1: .* \\(num_gpus, num_cpu_workers, or the "
                                       "cluster's nodes\\)"):
        check_matches({"config": {"num_workers": 2}}, cfg, tmp_path, critic=False)
