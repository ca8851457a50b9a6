"""Rewards through verl's reward manager (`reward.reward_manager`, naive by default) and the user's function."""

import asyncio
import math
from pathlib import Path

import numpy as np
import torch
from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager

from kit.errors import KitError
from kit.task import Problems


class RewardScorer:
    def __init__(self, verl_cfg, tokenizer):
        fn = verl_cfg.reward.custom_reward_function
        if not Path(fn.path).is_file():
            raise KitError(f"reward file '{fn.path}' not found: set reward_model.custom_reward_function.path")
        try:
            self.manager = load_reward_manager(verl_cfg, tokenizer)
        except AttributeError:
            raise KitError(f"reward file '{fn.path}' has no function '{fn.name}': "
                           "set reward_model.custom_reward_function.name") from None
        except Exception as err:  # the user's module failed to import
            raise KitError(f"reward file '{fn.path}' failed to import ({type(err).__name__}: {err}): fix it") from None
        self.where = f"{fn.name} in {fn.path}"
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
        results = self.manager.loop.run_until_complete(self._score_all(batch))
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

    async def _score_all(self, batch) -> list[dict]:
        # gathered inside the loop: outside it, asyncio asks for a current loop, which verl's servers unset
        return await asyncio.gather(*(self._score_one(batch[i:i + 1]) for i in range(len(batch))))

    async def _score_one(self, item: DataProto) -> dict:
        try:
            result = await self.manager.run_single(item)
        except Exception as err:
            raise KitError(f"reward function {self.where} raised {type(err).__name__}: {err}: fix the function "
                           "(it must return a number for every response)") from None
        score = result["reward_score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise KitError(f"reward function {self.where} returned {score!r}: it must return a finite number "
                           "or a dict with a numeric 'score'")
        return result
