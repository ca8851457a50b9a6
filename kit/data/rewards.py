"""Rewards through verl's reward manager (`reward.reward_manager`, naive by default) and the user's function.

A call that raises, returns something other than a finite number, or takes longer than
reward.timeout seconds scores 0: the step goes on with a warning and counts them (reward/failed,
reward/timed_out). Only when every response of a call fails does the run stop, with one line naming the
first failure: then the function itself is broken, and the last checkpoint holds the work so far.
"""

import asyncio
import sys
from pathlib import Path

import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager

from kit.data.checks import is_finite_number
from kit.data.daemon_threads import DaemonThreads
from kit.data.task import Problems
from kit.errors import KitError


class RewardFailure(Exception):
    """One response the reward function could not score; the message is the one-line explanation."""


class RewardTimeout(RewardFailure):
    """A call that took longer than reward.timeout."""


class RewardScorer:
    def __init__(self, verl_cfg, tokenizer, timeout: float):
        fn = verl_cfg.reward.custom_reward_function
        if fn.path is not None and not Path(fn.path).is_file():  # None: verl's own default_compute_score
            raise KitError(f"reward file '{fn.path}' not found: set reward.custom_reward_function.path")
        try:
            self.manager = load_reward_manager(verl_cfg, tokenizer)
        except AttributeError:
            raise KitError(f"reward file '{fn.path}' has no function '{fn.name}': "
                           "set reward.custom_reward_function.name") from None
        except Exception as err:  # the user's module failed to import (verl wraps the error in a RuntimeError)
            cause = err.__cause__ or err
            raise KitError(f"reward file '{fn.path}' failed to import ({type(cause).__name__}: {cause}): fix it") from None
        self.manager.loop.set_default_executor(DaemonThreads())
        self.where = f"{fn.name} in {fn.path}" if fn.path else "verl's default_compute_score"
        self.timeout = timeout  # seconds per call (a hung call's thread cannot be stopped; it is abandoned)
        self.failed, self.timed_out = 0, 0  # of the last score() call
        # GDPO normalises each of these keys of the function's returned dict on its own.
        self.required_keys = list(verl_cfg.algorithm.gdpo_reward_keys or []) if verl_cfg.algorithm.adv_estimator == "gdpo" else []

    def score(self, batch: DataProto, rows: Problems) -> tuple[torch.Tensor, list[float]]:
        """Score every response against its row's ground truth (data_source, extra_info). Returns verl's
        token-level scores (B, R), the score on each response's last token, and the accuracy of each
        response ('acc' in the function's dict, else the score). The other keys of a returned dict go into
        batch.non_tensor_batch, as verl's trainer puts them."""
        batch.non_tensor_batch["data_source"] = np.array(rows.data_sources, dtype=object)
        batch.non_tensor_batch["reward_model"] = np.array([{"ground_truth": gt} for gt in rows.ground_truths], dtype=object)
        batch.non_tensor_batch["extra_info"] = np.array(rows.extra_infos, dtype=object)
        results = self._checked(self.manager.loop.run_until_complete(self._score_all(batch)))
        extras = [result["reward_extra_info"] for result in results]
        for key in set.intersection(*(set(extra) for extra in extras)):
            batch.non_tensor_batch[key] = np.array([extra[key] for extra in extras], dtype=object)
        for key in self.required_keys:
            if key not in batch.non_tensor_batch:
                raise KitError(f"algorithm.gdpo_reward_keys names '{key}', but reward function {self.where} did not "
                               f"return it: return a dict like {{'score': ..., '{key}': ...}} for every response")
        scores = [result["reward_score"] for result in results]
        if "tool_reward" in batch.non_tensor_batch:  # multi-turn: what the tools awarded during the episode
            scores = [score + float(bonus) for score, bonus in zip(scores, batch.non_tensor_batch["tool_reward"])]
        accuracy = [float(result["reward_extra_info"].get("acc", score)) for result, score in zip(results, scores)]
        return self.manager.assemble_rm_scores(batch, scores), accuracy

    def episode_scores(self, batch: DataProto) -> tuple[torch.Tensor, list[float]]:
        """An environment's episodes: the summed turn rewards on each response's last token (B, R), as verl
        places scores, and each episode's success."""
        rewards = batch.non_tensor_batch["env_reward"].astype(float).tolist()
        return self.manager.assemble_rm_scores(batch, rewards), batch.non_tensor_batch["env_success"].astype(float).tolist()

    def _checked(self, results: list) -> list[dict]:
        """Failed calls score 0 with a warning; all of them failing stops the run."""
        failures = [result for result in results if isinstance(result, RewardFailure)]
        self.failed, self.timed_out = len(failures), sum(isinstance(f, RewardTimeout) for f in failures)
        if failures and len(failures) == len(results):
            raise KitError(str(failures[0]))
        if failures:
            print(f"warning: {failures[0]} ({len(failures)} of {len(results)} responses this step; they score 0, "
                  "counted in reward/failed)", file=sys.stderr)
        return [{"reward_score": 0.0, "reward_extra_info": {}} if isinstance(result, RewardFailure) else result
                for result in results]

    async def _score_all(self, batch) -> list:
        # Every verl reward manager reads these two tensors of a row (and its Python objects); slicing a batch with
        # all of its tensors costs a millisecond a row.
        lean = DataProto(batch=batch.batch.select("responses", "attention_mask"), non_tensor_batch=batch.non_tensor_batch,
                         meta_info=batch.meta_info)
        # gathered inside the loop: outside it, asyncio asks for a current loop, which verl's servers unset
        return await asyncio.gather(*(self._score_one(lean[i:i + 1]) for i in range(len(lean))))

    async def _score_one(self, item: DataProto) -> dict | RewardFailure:
        try:
            result = await asyncio.wait_for(self.manager.run_single(item), self.timeout)
        except TimeoutError:
            return RewardTimeout(f"reward function {self.where} took longer than reward.timeout="
                                 f"{self.timeout} s: make it faster or raise the timeout")
        except Exception as err:
            return RewardFailure(f"reward function {self.where} raised {type(err).__name__}: {err!s:.200}: fix the "
                                 "function (it must return a number for every response)")
        score, accuracy = result["reward_score"], result["reward_extra_info"].get("acc", 0.0)
        if not is_finite_number(score):
            return RewardFailure(f"reward function {self.where} returned {score!r:.100}: it must return a finite "
                                 "number or a dict with a numeric 'score' (one call per response)")
        if not (isinstance(accuracy, bool) or is_finite_number(accuracy)):
            return RewardFailure(f"reward function {self.where} returned 'acc': {accuracy!r:.100}: the 'acc' of its "
                                 "dict must be a finite number or a bool")
        return {**result, "reward_score": float(score)}
