"""The on-policy shortcut: no separate forward pass for the PPO 'old' log-probs when the old policy is the current one.

PPO's ratio compares the policy being updated with the one that sampled. With one epoch over one mini-batch the
actor has not changed since the rollout, so the 'old' log-probs are the ones the update's own forward computes:
the ratio is exactly 1 and the gradient is the policy gradient (TRL skips the pass the same way). That saves a
forward over the whole batch every step. It holds only when

- every row is trained once, by one optimizer step (ppo_epochs 1, one mini-batch);
- the sampler is the trainer's own model (the hf engine: its log-probs equal the trainer's; vllm's and sglang's
  kernels differ, and the gap is what rollout correction measures and corrects);
- nothing else needs them before the update (a KL penalty in the reward, rollout importance weights, bypass mode,
  the optimal-token-baseline estimators' sum of pi^2).

Otherwise the pass runs as before. When it is skipped, the update reports verl's rollout-correction metrics of the
sampler's log-probs against the trainer's from its own forward (the same rollout_corr/* keys).
"""

from verl.trainer.ppo.rollout_corr_helper import compute_rollout_corr_metrics_from_logprobs
from verl.utils import tensordict_utils as tu
from verl.workers.utils import losses

from kit.padding import no_padding_2_padding
from kit.verl_config import SUM_PI_SQUARED_ESTIMATORS

ON_POLICY = "old_log_probs_from_update"  # the update's meta key: take the old log-probs from its own forward


def needs_old_log_probs(cfg) -> bool:
    """Whether this config's 'old' log-probs need a pass of their own; else they are the update's own (see the
    module's docstring)."""
    actor, algo = cfg.training.actor, cfg.algorithm
    on_policy = (cfg.inference.engine == "hf" and actor.ppo_epochs == 1
                 and (actor.mini_batch_size or cfg.batch_size) == cfg.batch_size
                 and not algo.use_kl_in_reward and algo.rollout_is is None and algo.policy_loss != "bypass_mode"
                 and algo.advantage_estimator not in SUM_PI_SQUARED_ESTIMATORS)
    return not on_policy


def ppo_loss(config, model_output, data, dp_group=None):
    """verl's PPO loss; on-policy, with the micro-batch's old log-probs set to its current ones (detached)."""
    if not tu.get_non_tensor_data(data=data, key=ON_POLICY, default=False):
        return losses.ppo_loss(config, model_output, data, dp_group)
    log_probs = no_padding_2_padding(model_output["log_probs"], data).detach()  # (b, R), as the loss pads them
    data["old_log_probs"] = log_probs
    loss, metrics = losses.ppo_loss(config, model_output, data, dp_group)
    padded = data.select("response_mask", "rollout_log_probs").to_padded_tensor()  # (b, R) each
    metrics.update(compute_rollout_corr_metrics_from_logprobs(log_probs, padded["rollout_log_probs"],
                                                              padded["response_mask"].bool()))
    return loss, metrics
