"""Write the dataset example's files in verl's format, as verl's preprocessing scripts do
(examples/data_preprocess/gsm8k.py): data_source openai/gsm8k, the question plus its instruction as a chat
prompt, the answer in reward_model.ground_truth. The problems are generated word problems, not GSM8K itself
(nothing is downloaded). Run: python examples/dataset/make_data.py [--format parquet|jsonl]
"""

import argparse
import random
from pathlib import Path

import pandas

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
TEMPLATES = [
    ("{name} has {a} apples and buys {b} more. How many apples does {name} have now?", lambda a, b: a + b),
    ("{name} had {a} stickers and gave away {b}. How many stickers are left?", lambda a, b: a - b),
    ("A box holds {b} pens. How many pens are in {a} boxes?", lambda a, b: a * b),
]
NAMES = ["Tom", "Ana", "Lee", "Mia", "Sam", "Kai"]


def rows(split: str, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        template, answer = rng.choice(TEMPLATES)
        a, b = rng.randint(10, 60), rng.randint(2, 9)
        question = template.format(name=rng.choice(NAMES), a=a, b=b)
        out.append({
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"{question} {INSTRUCTION}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(answer(a, b))},
            "extra_info": {"split": split, "index": index, "question": question},
        })
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    parser.add_argument("--out", default=str(Path(__file__).parent / "data"))
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", 2000, 0), ("test", 200, 1)):
        frame = pandas.DataFrame(rows(split, count, seed))
        path = Path(args.out) / f"{split}.{args.format}"
        frame.to_parquet(path) if args.format == "parquet" else frame.to_json(path, orient="records", lines=True)
        print(f"wrote {len(frame)} rows to {path}")


if __name__ == "__main__":
    main()
