#!/usr/bin/env bash
# The default task for 100 steps with each estimator named, side by side on the same GPU (one process
# each), logs and metrics under $OUT/<estimator>/. Use: bash bench/estimators.sh grpo gae
: "${OUT:?OUT: the folder the results are copied to}"
for estimator in "$@"; do
  python algorithm.py algorithm.advantage_estimator="$estimator" output_dir="$OUT/$estimator" resume=off \
    save_every=0 val_every=25 > "$OUT/$estimator.log" 2>&1 &
done
wait
for estimator in "$@"; do
  echo "== $estimator"; tail -c 400 "$OUT/$estimator.log"
done
