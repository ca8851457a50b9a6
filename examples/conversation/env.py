"""A multi-turn conversation: the user keeps a running total with the model over three rounds ("start with 7,
add 5", then "now add 8", ...). Each right total earns 1/3; after a wrong one the user says the right total
and goes on, so every turn is scored on its own. An Environment class whose observations are the user's
next messages (interface: examples/text_game/env.py).
Run: python algorithm.py config=examples/conversation/config.yaml
"""

import random
import re

DATA_SOURCE = "running_total"
ROUNDS = 3


class Environment:
    system_prompt = "You keep a running total for the user. Reply with the new total only, as a number."

    def reset(self, seed):
        rng = random.Random(seed)
        self.total = rng.randint(1, 9)
        self.additions = [rng.randint(1, 9) for _ in range(ROUNDS)]
        self.round, self.right = 0, 0
        return f"Start with {self.total}. Add {self.additions[0]}. What is the total?"

    def step(self, action):
        self.total += self.additions[self.round]
        numbers = re.findall(r"-?\d+", action)
        correct = bool(numbers) and int(numbers[0]) == self.total
        self.right += correct
        self.round += 1
        done = self.round == ROUNDS
        info = {"success": self.right == ROUNDS}
        if done:
            return "", correct / ROUNDS, True, info
        lead = "Right." if correct else f"Not quite: it is {self.total}."
        return f"{lead} Now add {self.additions[self.round]}. What is the total?", correct / ROUNDS, False, info
