"""Everything a run settles before its workers start, in one call: the config read and checked, the machine's GPUs
(or a Ray cluster's), the model folder and tokenizer, the micro-batch size the memory estimate allows, and verl's own
trainer config. A mistake anywhere here is one line (a KitError) and costs seconds, not a worker start."""

from dataclasses import dataclass

from omegaconf import DictConfig
from transformers import AutoConfig, AutoTokenizer

from kit.patches import cpu_platform
from kit.setup import cluster, memory
from kit.setup.config import cpu_defaults, load_config
from kit.setup.hardware import resolve_hardware
from kit.setup.models import resolve_model_path
from kit.setup.preflight import (check_algorithm, check_engine, check_group_size, check_loggers, check_no_trl,
                                 check_output_dir, check_tensor_parallel)
from kit.setup.verl_config import compose_verl_config, verl_overrides


@dataclass
class Setup:
    cfg: DictConfig  # config.yaml with the overrides, checked; num_gpus, workers and micro-batch size resolved
    verl_cfg: DictConfig  # verl's trainer config, which its workers, reward manager and estimators read
    tokenizer: object  # the model's tokenizer


def prepare(config_path: str, overrides: list[str]) -> Setup:
    cfg = load_config(config_path, overrides)
    check_no_trl()
    check_algorithm(cfg)
    check_group_size(cfg)
    check_loggers(cfg)
    check_engine(cfg)
    check_output_dir(cfg)
    resolve_hardware(cfg, cluster.node_gpus(cfg))  # this machine's GPUs, or (ray_address) each cluster node's
    if cpu_run := cpu_defaults(cfg, overrides):  # config.yaml's `cpu` keys: a run that shows learning in minutes
        print(f"no GPU: a shorter run for the CPU, {' '.join(cpu_run)} (set them to change it)")
    if cfg.num_gpus == 0:
        cpu_platform.enable()
    model_dir = resolve_model_path(cfg.model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, clean_up_tokenization_spaces=False)  # BPE: the decode as sampled
    hf_config = AutoConfig.from_pretrained(model_dir)
    cfg.model_context = hf_config.max_position_embeddings
    check_tensor_parallel(cfg, hf_config)
    gpu = memory.gpu_bytes() if cfg.num_gpus else None  # None on a Ray head without GPUs: the checks are skipped
    memory.size_micro_batches(cfg, hf_config, gpu)  # max_tokens_per_gpu auto: as large as the GPU's memory allows
    if gpu:  # stops here, naming the keys to change, when it cannot fit
        print(memory.check_fits(cfg, hf_config, gpu))
    verl_cfg = compose_verl_config(verl_overrides(cfg, model_dir, on_gpu=cfg.num_gpus > 0))
    cluster.check_shared_output_dir(cfg)  # on a cluster, every node must see output_dir as the driver does
    return Setup(cfg, verl_cfg, tokenizer)
