"""kit/run/export.py: the actor's Hugging Face export written a shard at a time, against what save_pretrained writes for
the same weights (in one process, the model fully sharded over a one-rank mesh as verl's FSDP engine shards it). The
workers' tests (test_workers, test_lora) export through it from Ray workers, LoRA included."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kit.run import export
from test_verl_contract import one_rank_process_group


def exported(tmp_path, model_dir, shard_bytes):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    trained = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    expected = {name: value.clone() for name, value in trained.state_dict().items()}
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(trained.config)
    trained.save_pretrained(tmp_path / "save_pretrained")
    with one_rank_process_group(tmp_path, "gloo"):
        for layer in trained.model.layers:
            fully_shard(layer, mesh=init_device_mesh("cpu", (1,)))
        fully_shard(trained, mesh=init_device_mesh("cpu", (1,)))
        export.write_hf_folder(str(tmp_path / "kit"), trained, meta, shard_bytes)
    return expected


@pytest.mark.parametrize("shard_bytes", [export.SHARD_BYTES, 20_000])
def test_the_export_is_what_save_pretrained_writes(tmp_path, tiny_model_dir, shard_bytes):
    """One file or several (a small shard size): the same tensors under the same names (the tied lm_head once),
    the same config.json, an index naming every weight's file, and from_pretrained loads the weights exactly."""
    expected = exported(tmp_path, tiny_model_dir, shard_bytes)
    kit, reference = tmp_path / "kit", tmp_path / "save_pretrained"
    files = sorted(path.name for path in kit.glob("*.safetensors"))
    written = {name: value for path in kit.glob("*.safetensors") for name, value in load_file(path).items()}
    assert written.keys() == load_file(reference / "model.safetensors").keys()
    assert json.loads((kit / "config.json").read_text()) == json.loads((reference / "config.json").read_text())
    if shard_bytes == export.SHARD_BYTES:
        assert files == ["model.safetensors"] and not (kit / "model.safetensors.index.json").exists()
    else:
        assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
        index = json.loads((kit / "model.safetensors.index.json").read_text())
        assert index["weight_map"] == {name: path.name for path in kit.glob("*.safetensors") for name in load_file(path)}
        assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in written.values())
    assert len({path.stat().st_mode for path in kit.iterdir()}) == 1  # weights as readable as config.json (umask)
    loaded = AutoModelForCausalLM.from_pretrained(kit, dtype=torch.float32).state_dict()
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name
