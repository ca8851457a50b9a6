#!/usr/bin/env bash
# The tool-use and text-game examples for 100 steps side by side, one GPU each (GPUs 0 and 1), in /tmp/runs/<name>.
# Each command (re)starts a run that is not going (resume=auto continues from its last checkpoint, every 10 steps),
# waits up to $1 seconds, and copies the metrics and logs to $OUT: run it again to follow them, or to go on after
# the machine restarted. Use: bash bench/multi_turn.sh 540
: "${OUT:?OUT: the folder the results are copied to}"
declare -A CONFIG=([tool_use]="examples/tool_use/config.yaml val_every=50" [text_game]="examples/text_game/config.yaml val_every=25")
gpu=0
for name in tool_use text_game; do
  dir=/tmp/runs/$name; mkdir -p "$dir"
  if ! pgrep -f "output_dir=$dir" > /dev/null && ! grep -q '^done' "$dir/log" 2>/dev/null; then
    CUDA_VISIBLE_DEVICES=$gpu setsid nohup python algorithm.py config=${CONFIG[$name]} batch_size=8 val_size=64 \
      save_every=10 output_dir="$dir" >> "$dir/log" 2>&1 &
  fi
  gpu=$((gpu + 1))
done
end=$((SECONDS + $1))
while [ $SECONDS -lt $end ] && pgrep -f "algorithm.py config=examples" > /dev/null; do sleep 5; done
for name in tool_use text_game; do
  mkdir -p "$OUT/$name"; cp /tmp/runs/$name/metrics.jsonl "$OUT/$name/" 2>/dev/null
  tail -c 3000 /tmp/runs/$name/log > "$OUT/$name/log_tail.txt"
  echo "== $name: $(grep -c train/reward_mean /tmp/runs/$name/metrics.jsonl 2>/dev/null) steps logged"; tail -c 300 /tmp/runs/$name/log
done
