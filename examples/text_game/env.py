"""A text game: guess the secret number from 1 to 20, told "higher" or "lower" after each wrong guess.

An environment class instead of get_batch: the loop makes n_generations copies of Environment per start
state, calls reset(seed) for the opening observation, then step(reply) with each model turn until done or
inference.max_turns. Turn rewards sum into the episode's reward: 1 for the right number, -0.1 for each
wrong or unreadable guess, so the fewer guesses the better. Validation plays the held-out start states
(seeds from kit.data.task.VAL_SEED_BASE up) greedily. Run it: python algorithm.py config=examples/text_game/config.yaml

Interface the loop uses (any env.py can define it instead of get_batch):
  class Environment:
      system_prompt = "..."             (optional) the system message of every episode
      reset(seed) -> observation         the first user message; the same seed gives the same start state
      step(action) -> (observation, reward, done, info)
                                         action: the model's reply as text; observation: the next user
                                         message; info['success'] (optional) is the episode's accuracy
  DATA_SOURCE (optional) names the task in logs.
"""

import random
import re

DATA_SOURCE = "guess_the_number"
LOW, HIGH = 1, 20


class Environment:
    system_prompt = (f"We play a game. I think of a whole number from {LOW} to {HIGH}; you guess it. Reply with "
                     "just your guess, one number. After a wrong guess I say whether my number is higher or lower.")

    def reset(self, seed):
        self.secret = random.Random(seed).randint(LOW, HIGH)
        return f"I have my number. What is your first guess?"

    def step(self, action):
        numbers = re.findall(r"-?\d+", action)
        if not numbers or not LOW <= int(numbers[0]) <= HIGH:
            return f"Please reply with one whole number from {LOW} to {HIGH}.", -0.1, False, {"success": False}
        guess = int(numbers[0])
        if guess == self.secret:
            return "", 1.0, True, {"success": True}
        hint = "higher" if self.secret > guess else "lower"
        return f"No, my number is {hint} than {guess}. Your next guess?", -0.1, False, {"success": False}
