#!/usr/bin/env bash
# verl 0.9.1's own trainer (python -m verl.trainer.main_ppo, GRPO, vllm rollout through its agent loop) on the kit's
# throughput runs' task (bench/catalogue.py: verl-* runs): the same random model, the same questions
# (bench/throughput_task.py, as parquet: bench/verl_trainer_data.py), 64 prompts x 8 responses, LEN new tokens at
# most, STEPS steps, and the kit's settings (config.yaml, kit/setup/verl_config.py) wherever verl's config has them.
# Its file logger writes every step's metrics to DIR/metrics.jsonl ({"step": N, "data": {...}}; bench/bench_table.py
# reads verl-* runs so).
#
# Use: bash bench/verl_trainer.sh DIR MODEL_DIR [LEN] [STEPS] [HYDRA_OVERRIDE...]
# DIR's name ending in -v0 runs verl's legacy trainer (trainer.use_v1=false) instead of the default V1 one, which
# imports TransferQueue (verl's verl-core extra, which the kit's vllm and sglang extras install).
set -e
dir=$(realpath -m $1) model=$2 len=${3:-1024} steps=${4:-5}; shift $(( $# < 4 ? $# : 4 ))
name=$(basename $dir); mkdir -p $dir
python bench/verl_trainer_data.py $dir/data $((64 * steps))
version=()
if [[ $name == *-v0 ]]; then version=(trainer.use_v1=false)
else python -c "import transfer_queue" || { echo "verl's V1 trainer needs TransferQueue: pip install -e '.[vllm]'"; exit 1; }
fi

export VERL_FILE_LOGGER_PATH=$dir/metrics.jsonl
tokens=16384  # config.yaml's training.actor.max_tokens_per_gpu: micro-batches by token count (dynamic batch size)
# ppo_mini_batch_size=64 prompts = the whole batch: one optimizer step a step, as the kit's mini_batch_size null.
# Model: sdpa and no remove-padding (flash-attn is not installed), no gradient checkpointing (verl's default is on),
# as kit/setup/verl_config.py sets them; fused AdamW and no reshard after forward on one GPU, as the kit does on GPUs.
exec python -m verl.trainer.main_ppo \
  algorithm.adv_estimator=grpo algorithm.norm_adv_by_std_in_grpo=true algorithm.use_kl_in_reward=false \
  data.train_files=$dir/data/train.parquet data.val_files=$dir/data/val.parquet data.shuffle=false data.seed=0 \
  data.train_batch_size=64 data.max_prompt_length=${PROMPT_LEN:-64} data.max_response_length=$len \
  actor_rollout_ref.model.path=$model actor_rollout_ref.model.use_remove_padding=false \
  +actor_rollout_ref.model.override_config.attn_implementation=sdpa \
  actor_rollout_ref.model.enable_gradient_checkpointing=false actor_rollout_ref.model.use_fused_kernels=false \
  actor_rollout_ref.actor.strategy=fsdp2 actor_rollout_ref.actor.optim.lr=1e-5 \
  actor_rollout_ref.actor.optim.lr_scheduler_type=constant actor_rollout_ref.actor.optim.lr_warmup_steps=0 \
  +actor_rollout_ref.actor.optim.override_optimizer_config.fused=true \
  actor_rollout_ref.actor.fsdp_config.reshard_after_forward=false actor_rollout_ref.actor.fsdp_config.seed=0 \
  actor_rollout_ref.actor.use_torch_compile=true actor_rollout_ref.actor.grad_clip=1.0 \
  actor_rollout_ref.actor.clip_ratio=0.2 actor_rollout_ref.actor.clip_ratio_low=0.2 \
  actor_rollout_ref.actor.clip_ratio_high=0.2 actor_rollout_ref.actor.clip_ratio_c=3.0 \
  actor_rollout_ref.actor.loss_agg_mode=token-mean actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
  actor_rollout_ref.actor.ppo_epochs=1 actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.use_dynamic_bsz=true actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$tokens \
  actor_rollout_ref.actor.use_kl_loss=false actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$tokens \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.mode=async actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 actor_rollout_ref.rollout.top_p=1.0 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
  actor_rollout_ref.rollout.free_cache_engine=true actor_rollout_ref.rollout.max_num_batched_tokens=8192 \
  actor_rollout_ref.rollout.dtype=bfloat16 actor_rollout_ref.rollout.enforce_eager=false \
  actor_rollout_ref.rollout.calculate_log_probs=true actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true \
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$tokens \
  reward.custom_reward_function.path=$PWD/my_reward.py reward.custom_reward_function.name=compute_score \
  trainer.device=cuda trainer.nnodes=1 trainer.n_gpus_per_node=1 trainer.total_epochs=1 \
  trainer.total_training_steps=$steps trainer.val_before_train=false trainer.test_freq=-1 trainer.save_freq=-1 \
  trainer.resume_mode=disable trainer.default_local_dir=$dir/checkpoints "trainer.logger=[console,file]" \
  trainer.project_name=verl-kit-bench trainer.experiment_name=$name \
  +ray_kwargs.ray_init.address=local +ray_kwargs.ray_init.include_dashboard=false \
  hydra.run.dir=$dir/hydra "${version[@]}" "$@"
