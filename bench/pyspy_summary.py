"""Where a process spent its samples, from py-spy's raw (collapsed-stack) output (bench/watch_generation.sh).

usage: python bench/pyspy_summary.py FILE... [--top N]
  For each FILE (pyspy_PID.txt): the share of samples whose innermost frame is each function ("self"), and the
  share whose stack holds it anywhere ("inclusive"), the N most frequent of each (default 12).
"""

import argparse
from collections import Counter


def summarise(path: str, top: int):
    self_time, inclusive, total = Counter(), Counter(), 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")  # "frame;frame;...;frame COUNT"
            frames, count = stack.split(";"), int(count)
            total += count
            self_time[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    print(f"== {path}: {total} samples")
    for title, counts in (("self", self_time), ("inclusive", inclusive)):
        print(f"-- {title}")
        for frame, count in counts.most_common(top):
            print(f"{count / total:6.1%}  {frame}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for path in args.files:
        summarise(path, args.top)
