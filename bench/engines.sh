#!/usr/bin/env bash
# Runs of $STEPS steps (default 20) one after the other on the same GPU, each named ENGINE (the default task)
# or ENGINE@EXAMPLE (examples/EXAMPLE/config.yaml), in /tmp/runs/engines/<name>/. The runs go on detached; each
# command waits up to $1 seconds, then copies metrics and logs to $OUT: run it again to follow them (as bench/run.sh).
# Table: python bench/engine_table.py $OUT.
# Use: bash bench/engines.sh 540 vllm hf;  STEPS=10 bash bench/engines.sh 540 vllm@tool_use
: "${OUT:?OUT: the folder the results are copied to}"
wait_s=$1; shift
root=/tmp/runs/engines; mkdir -p $root
if [ ! -f $root/status ]; then
  echo "started $*" > $root/status
  setsid nohup bash -c 'root=$0; for run in "$@"; do
      engine=${run%@*}; name=${run/@/-}; example=; [ "$run" != "$engine" ] && example=config=examples/${run#*@}/config.yaml
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > $root/$name.mem & sampler=$!
      python algorithm.py $example inference.engine=$engine steps_per_epoch=${STEPS:-20} val_every=0 save_every=0 \
        resume=off output_dir=$root/$name > $root/$name.log 2>&1
      echo "$name rc=$?" >> $root/status; kill $sampler; done; echo done >> $root/status' $root "$@" > /dev/null 2>&1 &
fi
end=$((SECONDS + wait_s))
while [ $SECONDS -lt $end ] && ! grep -q '^done' $root/status; do sleep 5; done
cat $root/status
for log in $root/*.log; do
  engine=$(basename $log .log); mkdir -p $OUT/$engine
  cp $root/$engine/metrics.jsonl $OUT/$engine/ 2>/dev/null; tail -c 6000 $log > $OUT/$engine/log_tail.txt
  echo "== $engine: $(grep -c train/reward_mean $root/$engine/metrics.jsonl 2>/dev/null) steps"; tail -c 400 $log
  # GPU memory in use, sampled every 0.25 s: the engine's sleep shows as the drop between rollouts
  python3 -c "import sys; m=[int(x) for x in open(sys.argv[1]) if x.strip().isdigit()]; print('GPU MiB in use: max', max(m), 'p10', sorted(m)[len(m)//10], 'samples', len(m), 'every 5 s:', m[::20])" $root/$engine.mem
done
# Ray keeps the servers' and workers' own logs: their errors, for a run that failed
grep -l -i -E "error|traceback" /tmp/ray/session_latest/logs/*.err 2>/dev/null | head -20 | xargs -r tail -n 60 > $OUT/ray_errors.txt 2>/dev/null
true
