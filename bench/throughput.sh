#!/usr/bin/env bash
# The kit against TRL's GRPOTrainer on the lent GPU machine: runs in /tmp/runs/bench/<name>/, results copied to
# $OUT/<name>/ (kit: metrics.jsonl; TRL: result.json; both: gpu_mem.csv, log_tail.txt) and all in $OUT/runs.tar.gz. Table: python
# bench/bench_table.py DIR. A lent-GPU call lasts at most 10 minutes, so the first call starts the runs in the
# background and every call waits up to WAIT_S seconds, then copies what there is: call again (RUNs are then
# ignored) to follow them. Other runs afterwards: rm -r /tmp/runs/bench (or only its status file) first.
# Call again at once: a lent machine with no call in flight is given back after its idle time (30 s), and the
# background runs die with it (lease 5 lost two queues that way while their results were being read).
# In leases 12 and 13 the call after a 540 s one found a fresh machine three times, however quickly it came: carry
# .gpu-vllm in a first call that only unpacks it (source bench/gpu_setup.sh), then .gpu with the runs and a WAIT_S
# that covers the whole queue (560), and size the queue to end within that second call.
#
# What the calls carry: bench/make_carry.sh builds all of it (.gpu, .gpu-vllm, SmolLM2's GGUF in parts) and says
# which call carries what.
# Use: source bench/gpu_setup.sh; bash bench/throughput.sh WAIT_S RUN...
#   bash bench/throughput.sh 540 kit-smollm2 trl-smollm2 kit-qwen-1024 trl-qwen-1024 kit-learn@0+trl-learn@1
# Each argument runs after the one before; A+B runs A and B at the same time, and A:B runs B after A (so
# a:b+c:d is two queues side by side, e.g. one per GPU). A RUN is a name, plus @GPUS for CUDA_VISIBLE_DEVICES
# (kit-learn@0, kit-smollm2-2gpu@0,1; none: every GPU visible). The name's parts say it all:
#   kit-* / trl-*      the kit (python algorithm.py) or TRL (bench/trl_bench.py, with PYTHONPATH=/tmp/trl only)
#   verl-*             verl 0.9.1's own trainer (bench/verl_trainer.sh: python -m verl.trainer.main_ppo, vllm rollout,
#                      /tmp/site-vllm first) on the kit throughput run's task and settings; -v0: its legacy trainer
#   vllmload-RUN       the export of the earlier run RUN (its hf_model/, with LoRA its adapter too) loaded in vLLM
#                      (bench/vllm_load_export.py, /tmp/site-vllm first)
#   gen-*              the kit's sampler against plain HF generate on one batch (bench/generation.py)
#   vllmgen-*          vLLM alone (offline LLM, no verl) on the kit throughput run's batch (bench/vllm_generation.py,
#                      /tmp/site-vllm first): what vLLM's decoding takes of a kit-*-vllm run's generation phase
#   prof-*             the kit run of the same name (prof-default: kit-default) through bench/profile_update.py, 4 steps:
#                      the third update profiled (torch.profiler; with *pyprof* cProfile; *syncs*: the synchronizing
#                      CUDA calls counted by call site; *first*: the first update,
#                      warm-up included), into its result folder
#   *qwen*             the random Qwen2.5-0.5B shape (*7b*: Qwen2.5-7B's), else the random SmolLM2-135M one
#                      (bench/random_model.py)
#   a number           new tokens per response (default $LEN or 256), e.g. kit-qwen-1024
#   Ngpu, vllm         kit only: num_gpus=N (2gpu, 8gpu; else 1, learn runs too), inference.engine=vllm (/tmp/site-vllm first)
#   sglang, tpN        kit only: inference.engine=sglang (/tmp/site-sgl first, bench/sglang_bundle/) with $SGL_KWARGS
#                      (default: sglang's fa3 attention and torch sampling, kernels the bundle ships), and
#                      inference.tensor_parallel_size=N
#   lora               kit only: training.actor.lora.rank=16, alpha 32, lr 1e-4 (10x the full fine-tuning default)
#   tokN               kit only: training.actor.max_tokens_per_gpu=N (tokens per micro-batch)
#   bN, sN             kit only: batch_size=N prompts a step (where memory forces fewer rows); sN: N steps (verl-* too)
#   offload, ckpt      kit only: training.actor.param_offload and optimizer_offload; gradient_checkpointing
#   optoffload         kit only: training.actor.optimizer_offload alone
#   eager              kit only: inference.enforce_eager=true (vllm/sglang start without compiling or CUDA graphs:
#                      sooner, and slower to generate; for runs that check learning, not speed)
#   nocache            kit only: inference.free_cache_engine=false (vllm/sglang stay awake through the update)
#   nolp               kit only: inference.engine_log_probs=false (vllm/sglang return no per-token log-probs)
#   stats              kit only: inference.engine_kwargs.disable_log_stats=false (vLLM logs its decode throughput and
#                      running requests every VLLM_LOG_STATS_INTERVAL seconds, here 2); a kit or verl run's
#                      throughput lines from the vllm/sglang servers' Ray logs go to engine_stats.txt
#   watch              kit only: bench/watch_generation.sh samples the busiest processes (top, py-spy) for 8 s
#                      inside the second step's generation phase (top.txt, pyspy_PID.txt)
#   free               kit only: inference.free_sampler=true (the hf sampler's copy and cache freed for the update)
#   fusedtorch         kit only: training.actor.fused_kernels=torch
#   liger, noliger     kit only: training.actor.liger=true or false (Liger-Kernel in the actor and the hf sampler; the
#                      bundle must carry liger-kernel); neither: the default, auto (on from 65,536 response tokens a step)
#   compile            kit only: inference.compile=true (the hf sampler's decode step through torch.compile)
#   *learn*            learning runs instead: the kit's default task for 100 steps (held-out accuracy every 10),
#                      TRL's learn mode, on the real SmolLM2-135M-Instruct
#   kit-example_NAME   examples/NAME (e.g. kit-example_tool_use) for $EXAMPLE_STEPS steps (default 30), 8 prompts a
#                      step, held-out accuracy on 64 every 10 steps (bench/multi_turn.sh's settings)
#   kit-default*       the kit's default task for $STEPS steps (default 20), a checkpoint every 10; with *resume*
#                      the run is killed (SIGKILL) once step 12 is logged and started again: it resumes from step 10
# Kit throughput runs: 64 prompts x 8 responses (bench/throughput_task.py), $STEPS steps (default 5); TRL's Qwen
# runs with micro-batch $QWEN_MICRO (default 16). $MODELS (default /tmp/models) holds the random models, built first if
# missing. $EXTRA is appended to every kit command (a CPU dry run: EXTRA="num_gpus=0 batch_size=4 ...", and
# SMOKE=1 for bench/trl_bench.py).
root=/tmp/runs/bench; models=${MODELS:-/tmp/models}; mkdir -p $root

one_run() {  # NAME[@GPUS]: the command, its log, its GPU memory every 0.25 s, and its exit code in status
  local name=${1%@*} gpus= shape=smollm2-135m len=${LEN:-256} ngpu=1 cmd
  local as=$name; [[ $name == prof-* ]] && as=kit-${name#prof-}  # a profile runs the kit run of that name
  [[ $1 == *@* ]] && gpus=${1#*@} && export CUDA_VISIBLE_DEVICES=$gpus
  local dir=$root/$name; mkdir -p $dir
  local tokens= fused= prompts= steps=; for part in ${name//-/ }; do
    [[ $part =~ ^b([0-9]+)$ ]] && prompts=${BASH_REMATCH[1]}; [[ $part =~ ^s([0-9]+)$ ]] && steps=${BASH_REMATCH[1]}
    [[ $part =~ ^[0-9]+$ ]] && len=$part; [[ $part =~ ^tok([0-9]+)$ ]] && tokens=${BASH_REMATCH[1]}
    [[ $part =~ ^fused(torch)$ ]] && fused=${BASH_REMATCH[1]}
    [[ $part =~ ^([0-9]+)gpu$ ]] && ngpu=${BASH_REMATCH[1]}; done
  [[ $name == *qwen* ]] && shape=qwen2.5-0.5b; [[ $name == *qwen*7b* ]] && shape=qwen2.5-7b
  case $as in
    kit-default*) cmd="python algorithm.py steps_per_epoch=${STEPS:-20} save_every=10 val_every=0 output_dir=$dir
                       num_gpus=$ngpu" ;;
    kit-example_*) example=${name#kit-example_}
                   cmd="python algorithm.py config=examples/${example%%-*}/config.yaml batch_size=8 val_size=64
                        val_every=10 save_every=0 steps_per_epoch=${EXAMPLE_STEPS:-30} resume=off output_dir=$dir" ;;
    kit-learn*) cmd="python algorithm.py steps_per_epoch=100 val_every=10 save_every=0 resume=off output_dir=$dir
                     num_gpus=$ngpu" ;;
    kit-*) cmd="python algorithm.py env=bench/throughput_task.py model_path=$models/$shape batch_size=64 n_generations=8
                inference.max_response_length=$len steps_per_epoch=${STEPS:-5} save_every=0 val_every=0 resume=off
                output_dir=$dir num_gpus=$ngpu" ;;
    gen-*) cmd="python bench/generation.py $models/$shape $len $dir/result.json" ;;
    verl-*) cmd="bash bench/verl_trainer.sh $dir $models/$shape $len ${steps:-${STEPS:-5}}"
            export PYTHONPATH=/tmp/site-vllm:$PYTHONPATH ;;  # its rollout is vllm, as the kit's *vllm* runs
    vllmgen-*) cmd="python bench/vllm_generation.py $models/$shape $len $dir/result.json"
               export PYTHONPATH=/tmp/site-vllm:$PYTHONPATH ;;
    vllmload-*) cmd="python bench/vllm_load_export.py $root/${name#vllmload-}/hf_model $models/$shape $dir/result.json"
                export PYTHONPATH=/tmp/site-vllm:$PYTHONPATH ;;
    trl-learn*) cmd="python bench/trl_bench.py learn ${VERL_KIT_CACHE:-$HOME/.cache/verl-kit}/smollm2 $dir/result.json" ;;
    trl-*) cmd="python bench/trl_bench.py throughput $models/$shape $len $dir/result.json"
           [[ $shape == qwen* ]] && export MICRO=${QWEN_MICRO:-16} ;;  # as in the earlier TRL comparisons
    *) echo "$name: unknown run (kit-*, trl-*, gen-*, verl-*, vllmgen-* or vllmload-*)" >> $root/status; return ;;
  esac
  if [[ $as == kit-* ]]; then  # the name's engine, micro-batch tokens and fused kernels, then $EXTRA, which overrides them
    [[ $name == *vllm* ]] && cmd+=" inference.engine=vllm" && export PYTHONPATH=/tmp/site-vllm:$PYTHONPATH
    [[ $name == *sglang* ]] && cmd+=" inference.engine=sglang ${SGL_KWARGS:-inference.engine_kwargs.attention_backend=fa3
      inference.engine_kwargs.sampling_backend=pytorch}" && export PYTHONPATH=/tmp/site-sgl:$PYTHONPATH
    [[ $name =~ -tp([0-9]+) ]] && cmd+=" inference.tensor_parallel_size=${BASH_REMATCH[1]}"
    [[ $name == *lora* ]] && cmd+=" training.actor.lora.rank=16 training.actor.lora.alpha=32 training.actor.lr=1e-4"
    [[ -n $tokens ]] && cmd+=" training.actor.max_tokens_per_gpu=$tokens"
    [[ -n $fused ]] && cmd+=" training.actor.fused_kernels=$fused"
    [[ $name == *-liger* ]] && cmd+=" training.actor.liger=true"
    [[ $name == *-noliger* ]] && cmd+=" training.actor.liger=false"
    [[ -n $prompts ]] && cmd+=" batch_size=$prompts"
    [[ $name == *-offload* ]] && cmd+=" training.actor.param_offload=true training.actor.optimizer_offload=true"
    [[ $name == *-optoffload* ]] && cmd+=" training.actor.optimizer_offload=true"
    [[ $name == *-ckpt* ]] && cmd+=" training.actor.gradient_checkpointing=true"
    [[ $name == *-nocache* ]] && cmd+=" inference.free_cache_engine=false"
    [[ $name == *-eager* ]] && cmd+=" inference.enforce_eager=true"
    [[ $name == *-nolp* ]] && cmd+=" inference.engine_log_probs=false"
    [[ $name == *-stats* ]] && cmd+=" inference.engine_kwargs.disable_log_stats=false" \
      && export VLLM_LOG_STATS_INTERVAL=${VLLM_LOG_STATS_INTERVAL:-2}  # seconds (vLLM's default: 10)
    [[ $name == *-free* ]] && cmd+=" inference.free_sampler=true"
    [[ -n $steps ]] && cmd+=" steps_per_epoch=$steps"
    if [[ $name == prof-* ]]; then
      cmd="${cmd/python algorithm.py/python bench/profile_update.py $dir} steps_per_epoch=4"
      [[ $name == *pyprof* ]] && export PROFILE_PYTHON=1
      [[ $name == *syncs* ]] && export PROFILE_SYNCS=1
      [[ $name == *first* ]] && export PROFILE_CALL=1
    fi
    [[ $name == *compile* ]] && cmd+=" inference.compile=true"
    cmd+=" $EXTRA"
  fi
  if [[ $name == *vllm* ]]; then  # vLLM's bundle (its own folder, unpacked by a later call: bench/gpu_setup.sh)
    until [ -f /tmp/site-vllm/.unpacked ]; do sleep 10; done
  fi
  if [[ $name == *sglang* ]]; then  # SGLang's likewise (bench/sglang_bundle/unpack.sh)
    until [ -f /tmp/site-sgl/.unpacked ]; do sleep 10; done
  fi
  if [[ $name == *learn* || $name == *default* || $name == *example* ]]; then  # the real SmolLM2 (its GGUF may come in a later call)
    until python -c "from kit.models import resolve_model_path; resolve_model_path('embedded:smollm2')" 2> /dev/null; do sleep 10; done
  fi
  if [[ $name == trl-* ]]; then  # TRL sees /tmp/trl and the machine's own torch and transformers, never verl
    export PYTHONPATH=/tmp/trl
    python -c "import importlib.util as u, torch, transformers, trl
for m in (torch, transformers, trl): print(m.__name__, m.__version__, m.__file__)
print('verl importable:', u.find_spec('verl') is not None)" > $dir/run.log 2>&1
  else
    : > $dir/run.log
  fi
  nvidia-smi ${gpus:+-i $gpus} --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
    > $dir/gpu_mem.csv 2> /dev/null & local sampler=$!
  echo $cmd >> $dir/run.log
  [[ $as == kit-* && $name == *-watch* ]] && bash bench/watch_generation.sh $dir &
  if [[ $name == *resume* ]]; then  # killed once step 12 is logged, then the same command resumes it
    setsid $cmd >> $dir/run.log 2>&1 & local pid=$!
    until grep -q '"step": 12, "train/' $dir/metrics.jsonl 2> /dev/null || ! kill -0 $pid 2> /dev/null; do sleep 0.2; done
    kill -KILL -- -$pid; wait $pid; echo "== killed by SIGKILL after step 12" >> $dir/run.log
  fi
  $cmd >> $dir/run.log 2>&1; local rc=$?
  [[ $name == *resume* ]] && grep -o 'resumed from [^ ]*' $dir/run.log > $dir/resumed.txt
  if [[ ( $as == kit-* || $as == verl-* ) && ( $name == *vllm* || $name == *sglang* ) ]]; then  # their servers log
    # to Ray's latest session (beside another run: maybe its); vllmgen/vllmload start no Ray: its lines are older
    grep -h -E "generation throughput|gen throughput" /tmp/ray/session_latest/logs/*.{out,err} > $dir/engine_stats.txt 2> /dev/null
  fi
  echo "$name rc=$rc" >> $root/status; kill $sampler 2> /dev/null
}

if [ "$1" = --background ]; then  # the runs themselves, started by the first call below
  shift

  shapes="smollm2-135m qwen2.5-0.5b"; [[ $* == *7b* ]] && shapes+=" qwen2.5-7b"
  for shape in $shapes; do
    [ -f $models/$shape/config.json ] || { python bench/random_model.py $shape $models/.$shape && mv $models/.$shape $models/$shape; }
  done
  if [[ $* == *verl-* ]]; then  # its TransferQueue, now: a later call may not carry .gpu; the first call's status says if not
    bash bench/verl_trainer.sh prepare >> $root/status 2>&1 || echo "verl-* runs will fail (bench/make_carry.sh)" >> $root/status
  fi
  for group in "$@"; do
    for queue in ${group//+/ }; do (for run in ${queue//:/ }; do (one_run $run); done) & done; wait
  done
  echo done >> $root/status; exit
fi

wait_s=$1; shift
if [ ! -f $root/status ]; then
  echo "started $*" > $root/status
  setsid nohup bash $0 --background "$@" > $root/driver.log 2>&1 &
fi
end=$((SECONDS + wait_s))
while [ $SECONDS -lt $end ] && ! grep -q '^done' $root/status; do sleep 5; done
cat $root/status; cp $root/status $OUT/; tail -c 1000 $root/driver.log > $OUT/driver_tail.txt
shopt -s nullglob
for dir in $root/*/; do
  name=$(basename $dir); mkdir -p $OUT/$name
  cp $dir/metrics.jsonl $dir/result.json $dir/gpu_mem.csv $dir/resumed.txt $dir/update_*.txt $dir/engine_stats.txt \
     $dir/top.txt $dir/pyspy* $OUT/$name/ 2> /dev/null; tail -c 6000 $dir/run.log > $OUT/$name/log_tail.txt
  echo "== $name: $(grep -c -E '"train/|"timing_s/step"' $dir/metrics.jsonl 2> /dev/null) kit (or verl) steps logged, result.json: $(ls $dir/result.json 2> /dev/null)"
  tail -c 400 $dir/run.log; echo
done
# Ray keeps the workers' and servers' own logs: their errors, for a kit run that failed
grep -l -i -E "error|traceback" /tmp/ray/session_latest/logs/*.err 2> /dev/null | head -20 | xargs -r tail -n 60 > $OUT/ray_errors.txt 2> /dev/null
# Also all of it in one file: a call returns only so many files (lease 10 lost most runs' loose copies that way);
# tar -xzf runs.tar.gz gives the same folders
(cd $OUT && tar -czf runs.tar.gz --exclude runs.tar.gz *)
true
