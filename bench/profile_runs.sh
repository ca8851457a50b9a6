#!/usr/bin/env bash
# bench/profile_update.py's runs, one queue per GPU, detached; results under $OUT/<name>/ (update_profile_rank0.txt,
# metrics.jsonl, log tail). Use:
#   bash bench/profile_runs.sh WAIT_S "GPU:NAME:ENV:SHAPE ..."   (the first command starts them; each waits WAIT_S)
# NAME's runs: SHAPE small = the default task's size (16 x 8 rows of ~48 tokens, random SmolLM2-135M), qwen = 64 x 8 x
# 1,024 new tokens (random Qwen2.5-0.5B); ENV = comma-separated VAR=value for bench/profile_update.py's switches.
# All of it goes into $OUT/profile.tar.gz. $EXTRA is appended to every command (a CPU dry run: EXTRA="num_gpus=0 ...").
: "${OUT:?OUT: the folder the results are copied to}"
root=/tmp/runs/profile; models=${MODELS:-/tmp/models}; mkdir -p $root

one_run() {  # NAME ENV SHAPE
  local dir=$root/$1 shape_args
  case $3 in
    small) shape_args="model_path=$models/smollm2-135m batch_size=16 inference.max_response_length=8 steps_per_epoch=8" ;;
    qwen) shape_args="model_path=$models/qwen2.5-0.5b batch_size=64 inference.max_response_length=1024 steps_per_epoch=4" ;;
  esac
  mkdir -p $dir
  env ${2//,/ } python bench/profile_update.py $dir env=bench/throughput_task.py $shape_args save_every=0 val_every=0 \
    resume=off output_dir=$dir/run $EXTRA > $dir/log.txt 2>&1
  echo "$1 rc=$?" >> $root/status
}

if [ "$1" = --background ]; then
  shift
  for shape in smollm2-135m qwen2.5-0.5b; do
    [ -f $models/$shape/config.json ] || { python bench/random_model.py $shape $models/.$shape && mv $models/.$shape $models/$shape; }
  done
  for gpu in $(for run in $@; do echo ${run%%:*}; done | sort -u); do
    (for run in $@; do IFS=: read g name env shape <<< "$run"; [ $g = $gpu ] && CUDA_VISIBLE_DEVICES=$g one_run $name "$env" $shape; done) &
  done
  wait; echo done >> $root/status; exit
fi

wait_s=$1; shift
[ -f $root/status ] || { echo started > $root/status; setsid nohup bash $0 --background $@ > $root/driver.log 2>&1 & }
end=$((SECONDS + wait_s))
while [ $SECONDS -lt $end ] && ! grep -q '^done' $root/status; do sleep 5; done
cat $root/status; tail -c 1500 $root/driver.log
rm -rf /tmp/collect; for dir in $root/*/; do
  name=$(basename $dir); mkdir -p /tmp/collect/$name
  cp $dir/update_profile_rank0.txt $dir/update_trace_rank0.json.gz $dir/run/metrics.jsonl /tmp/collect/$name/ 2> /dev/null
  tail -c 3000 $dir/log.txt > /tmp/collect/$name/log_tail.txt
done
tar -czf $OUT/profile.tar.gz -C /tmp/collect .; ls -la $OUT
