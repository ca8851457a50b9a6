#!/usr/bin/env bash
# Where a server-engine step's generation phase spends the host's time (bench/run.sh's `watch` runs):
# once DIR/metrics.jsonl holds the first step, wait WATCH_DELAY seconds (default 6: inside the second step's
# generation), take two `top` frames 2 s apart, then sample the five busiest processes of the second frame with
# py-spy for 8 s (raw collapsed stacks, not pausing them; pip install py-spy==0.4.3, bench/offline/ carries it).
# Use: bash bench/watch_generation.sh DIR &     Out: DIR/top.txt, DIR/pyspy_PID.txt (and .log)
dir=$1
until [ -s $dir/metrics.jsonl ]; do sleep 0.5; done
sleep ${WATCH_DELAY:-6}
top -b -n 2 -d 2 -w 250 -c > $dir/top.txt
pids=$(awk '/^top -/ {frame++} frame == 2 && $1 ~ /^[0-9]+$/ {print $1}' $dir/top.txt | head -5)
command -v py-spy > /dev/null || { echo "py-spy not installed" > $dir/pyspy.log; exit; }
for pid in $pids; do
  py-spy record --nonblocking -r 50 -d 8 -f raw -o $dir/pyspy_$pid.txt -p $pid > $dir/pyspy_$pid.log 2>&1 &
done
wait
