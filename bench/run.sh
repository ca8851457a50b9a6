#!/usr/bin/env bash
# Benchmark runs by name, from the table in bench/catalogue.py (python bench/catalogue.py --list).
# Use: bash bench/run.sh WAIT_S RUN...
#   bash bench/run.sh 600 kit-smollm2 trl-smollm2 kit-qwen-1024 trl-qwen-1024 kit-learn@0+trl-learn@1
# Each argument runs after the one before; A+B runs A and B side by side, and A:B runs B after A (so a:b+c:d is two
# queues side by side, e.g. one per GPU). RUN@GPUS sets CUDA_VISIBLE_DEVICES (kit-learn@0, kit-smollm2-2gpu@0,1;
# without it every GPU is visible). A name not in the table starts nothing: one line says which.
# The queue runs detached, in /tmp/runs/bench/<name>/ (run.log; gpu_mem.csv: nvidia-smi every 0.25 s), each run's
# exit code in /tmp/runs/bench/status. This command waits up to WAIT_S seconds for the queue to end, then copies
# what there is to $OUT/<name>/ (default OUT: /tmp/runs/bench-out): metrics.jsonl (kit, verl) or result.json (TRL,
# gen, vllmgen, vllmload), gpu_mem.csv, log_tail.txt, and all of it again in $OUT/runs.tar.gz. Run it again (its
# RUNs are then ignored) to follow the queue: WAIT_S keeps each command short where a shell cuts long ones off.
# Another queue afterwards: rm -r /tmp/runs/bench (or only its status file) first.
# Table: python bench/bench_table.py $OUT. Environment (STEPS, LEN, EXTRA, MODELS, TRL_PYTHON, ...):
# python bench/catalogue.py --parts. A machine without a network: bench/offline/README.md.
cd "$(dirname "$0")/.." || exit 1
export BENCH_RUNS=${BENCH_RUNS:-/tmp/runs/bench}
root=$BENCH_RUNS models=${MODELS:-/tmp/models} out=${OUT:-/tmp/runs/bench-out}

one_run() {  # NAME[@GPUS]: its command, log, GPU memory and exit code
  local name=${1%@*} gpus= vars cmd python needs engine_stats watch kill_after_step
  [[ $1 == *@* ]] && gpus=${1#*@} && export CUDA_VISIBLE_DEVICES=$gpus
  local dir=$root/$name; mkdir -p $dir; : > $dir/run.log
  vars=$(python bench/catalogue.py --vars $name 2>> $dir/run.log) || { echo "$name rc=unknown" >> $root/status; return; }
  eval "$vars"  # cmd, python, needs, engine_stats, watch, kill_after_step
  if [[ " $needs " == *" smollm2 "* ]]; then  # the real SmolLM2, converted once into the kit's cache (trl-learn's model)
    python -c "from kit.setup.models import resolve_model_path; resolve_model_path('embedded:smollm2')" >> $dir/run.log 2>&1
  fi
  # bench/offline/gpu_setup.sh names a script that puts the carried engines, TRL and models on the path
  [ -n "$BENCH_BEFORE_RUN" ] && source "$BENCH_BEFORE_RUN" $needs
  if [[ " $needs " == *" trl "* ]]; then  # TRL's environment must not see verl: verl 0.9.1 imports a class trl 1.x removed
    $python -c "import importlib.util as u, torch, transformers, trl
for m in (torch, transformers, trl): print(m.__name__, m.__version__, m.__file__)
print('verl importable:', u.find_spec('verl') is not None)" >> $dir/run.log 2>&1
  fi
  nvidia-smi ${gpus:+-i $gpus} --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
    > $dir/gpu_mem.csv 2> /dev/null & local sampler=$!
  echo "$cmd" >> $dir/run.log
  [ -n "$watch" ] && bash bench/watch_generation.sh $dir &
  if [ -n "$kill_after_step" ]; then  # killed once that step is logged; the same command then resumes it
    setsid $cmd >> $dir/run.log 2>&1 & local pid=$!
    until grep -q "\"step\": $kill_after_step, \"train/" $dir/metrics.jsonl 2> /dev/null || ! kill -0 $pid 2> /dev/null
    do sleep 0.2; done
    kill -KILL -- -$pid; wait $pid; echo "== killed by SIGKILL after step $kill_after_step" >> $dir/run.log
  fi
  $cmd >> $dir/run.log 2>&1; local rc=$?
  [ -n "$kill_after_step" ] && grep -o 'resumed from [^ ]*' $dir/run.log > $dir/resumed.txt
  if [ -n "$engine_stats" ]; then  # vLLM's and SGLang's servers log their throughput into Ray's newest log folder
    # (beside another run: maybe that run's)
    grep -h -E "generation throughput|gen throughput" /tmp/ray/session_latest/logs/*.{out,err} > $dir/engine_stats.txt 2> /dev/null
  fi
  echo "$name rc=$rc" >> $root/status; kill $sampler 2> /dev/null
}

if [ "$1" = --background ]; then  # the queue itself, started below
  shift
  for need in $(python bench/catalogue.py --needs "$@"); do  # the random models first, once for all queues
    shape=${need#model:}; [ "$shape" = "$need" ] || [ -f $models/$shape/config.json ] ||
      { python bench/random_model.py $shape $models/.$shape && mv $models/.$shape $models/$shape; }
  done
  for group in "$@"; do
    for queue in ${group//+/ }; do (for run in ${queue//:/ }; do (one_run $run); done) & done; wait
  done
  echo done >> $root/status; exit
fi

wait_s=$1; shift
if ! [[ $wait_s =~ ^[0-9]+$ ]] || { [ $# = 0 ] && [ ! -f $root/status ]; }; then
  echo "usage: bash bench/run.sh WAIT_S RUN...   (the runs: python bench/catalogue.py --list)" >&2; exit 2
fi
if [ ! -f $root/status ]; then
  python bench/catalogue.py --needs "$@" > /dev/null || exit 2  # an unknown name: its one line, and nothing starts
  mkdir -p $root; echo "started $*" > $root/status
  setsid nohup bash bench/run.sh --background "$@" > $root/driver.log 2>&1 &
elif [ $# -gt 0 ]; then
  echo "following the queue in $root (its status: $(head -1 $root/status)); $* not started"
fi
mkdir -p $out
end=$((SECONDS + wait_s))
while [ $SECONDS -lt $end ] && ! grep -q '^done' $root/status; do sleep 5; done
cat $root/status; cp $root/status $out/; tail -c 1000 $root/driver.log > $out/driver_tail.txt
shopt -s nullglob
for dir in $root/*/; do
  name=$(basename $dir); mkdir -p $out/$name
  cp $dir/{metrics.jsonl,result.json,gpu_mem.csv,resumed.txt,engine_stats.txt,top.txt} $dir/update_*.txt $dir/pyspy* \
     $out/$name/ 2> /dev/null; tail -c 6000 $dir/run.log > $out/$name/log_tail.txt
  echo "== $name: $(grep -c -E '"train/|"timing_s/step"' $dir/metrics.jsonl 2> /dev/null) kit (or verl) steps logged," \
       "result.json: $(ls $dir/result.json 2> /dev/null)"
  tail -c 400 $dir/run.log; echo
done
# Ray keeps its workers' and servers' own logs: their errors, for a run that failed
grep -l -i -E "error|traceback" /tmp/ray/session_latest/logs/*.err 2> /dev/null | head -20 | xargs -r tail -n 60 \
  > $out/ray_errors.txt 2> /dev/null
# All of it in one file as well (tar -xzf runs.tar.gz gives the same folders), for copying off a machine by
# transfers that take only so many files
(cd $out && tar -czf runs.tar.gz --exclude runs.tar.gz *)
true
