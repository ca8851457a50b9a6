"""Every place the kit reaches into verl's (or torch's) internals, checked directly, so an upgrade fails here
with a clear name rather than somewhere inside a Ray worker."""

import inspect
from importlib.metadata import version

import verl
from torch.distributed.fsdp import FSDPModule
from verl.trainer.ppo import core_algos
from verl.workers.engine import EngineRegistry
from verl.workers.engine_workers import ActorRolloutRefWorker


def test_pinned_versions():
    assert verl.__version__ == "0.9.1"
    assert version("transformers") == "5.10.4" and version("tensordict") == "0.10.0"


def test_actor_rollout_ref_worker_keys_init_model_on_role_substrings():
    # kit/worker.py passes role "actor" to verl's constructor, then sets "actor_ref": init_model must build
    # the reference for any role containing "ref" and the actor for any containing "actor".
    source = inspect.getsource(ActorRolloutRefWorker.init_model)
    assert 'if "ref" in self.role:' in source and 'if "actor" in self.role:' in source
    assert 'if "rollout" in self.role:' in source


def test_engine_registry_layout():
    # kit/cpu_platform.register_fsdp_engines adds a "cpu" key next to verl's cuda/npu ones.
    assert "cuda" in EngineRegistry._engines["language_model"]["fsdp2"]
    assert "cuda" in EngineRegistry._engines["value_model"]["fsdp2"]


def test_fsdp2_post_forward_setting_is_where_the_kit_saves_it():
    # kit/worker.gathered_weights saves and restores this private attribute around generation.
    assert hasattr(FSDPModule, "_get_fsdp_state") and hasattr(FSDPModule, "set_reshard_after_forward")
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    assert "post_forward_mesh_info" in inspect.getsource(FSDPParamGroup.__init__)


def test_process_group_backend_string_still_needs_the_cpu_workaround():
    from verl.utils import distributed

    assert 'f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in inspect.getsource(
        distributed.initialize_global_process_group_ray)


def test_registries_the_config_names_come_from():
    assert {"grpo", "rloo", "reinforce_plus_plus", "gae"} <= set(core_algos.ADV_ESTIMATOR_REGISTRY)
    assert {"vanilla", "gspo", "clip_cov"} <= set(core_algos.POLICY_LOSS_REGISTRY)
