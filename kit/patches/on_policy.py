"""The on-policy shortcut: no separate forward pass for the PPO 'old' log-probs when the old policy is the current one.

PPO's ratio compares the policy being updated with the one that sampled. With one epoch over one mini-batch the
actor has not changed since the rollout, so the 'old' log-probs are the ones the update's own forward computes:
the ratio is exactly 1 and the gradient is the policy gradient (TRL skips the pass the same way). That saves a
forward over the whole batch every step. Which engine sampled does not matter: the 'old' log-probs are the
trainer's own either way (vllm's and sglang's differ from them by their kernels; that gap is what rollout
correction weighs, and rollout_is is among the exceptions below). It holds only when

- every row is trained once, by one optimizer step (ppo_epochs 1, one mini-batch);
- nothing else needs them before the update (a KL penalty in the reward, rollout importance weights, bypass mode,
  the optimal-token-baseline estimators' sum of pi^2).

Otherwise the pass runs as before. When it is skipped, the update reports verl's rollout-correction metrics of the
sampler's log-probs against the trainer's from its own forward (the same rollout_corr/* keys), computed over all of
a worker's rows once its forwards and backwards are done, as verl's trainer computes them over the whole batch. Per
micro-batch, their fourteen read-backs from the GPU held up the host between each forward and its backward: 252 of
the 628 synchronizing calls in an update of the Qwen2.5-0.5B shape (docs/update.md).
"""

import torch
import torch.nn.functional as F
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_corr_metrics_from_logprobs
from verl.utils import tensordict_utils as tu
from verl.workers.utils import losses

from kit.patches.padding import no_padding_2_padding
ON_POLICY = "old_log_probs_from_update"  # the update's meta key: take the old log-probs from its own forward
# Estimators whose baseline needs sum over the vocabulary of pi^2 at each response token, from the actor.
SUM_PI_SQUARED_ESTIMATORS = ("optimal_token_baseline", "tir_optimal_token_baseline")


def needs_old_log_probs(cfg) -> bool:
    """Whether this config's 'old' log-probs need a pass of their own; else they are the update's own (see the
    module's docstring)."""
    actor, algo = cfg.training.actor, cfg.algorithm
    on_policy = (actor.ppo_epochs == 1
                 and (actor.mini_batch_size or cfg.batch_size) == cfg.batch_size
                 and not algo.use_kl_in_reward and algo.rollout_is is None and algo.policy_loss != "bypass_mode"
                 and algo.advantage_estimator not in SUM_PI_SQUARED_ESTIMATORS)
    return not on_policy


class PPOLoss:
    """verl's PPO loss, as the worker's loss function; on-policy, with each micro-batch's old log-probs set to its
    current ones (detached), and the rows kept for `rollout_corr_metrics`."""

    def __init__(self, config):
        self.config = config
        self.on_policy_rows = []  # per micro-batch: (log-probs, the sampler's log-probs, response mask), (b, R) each

    def __call__(self, model_output, data, dp_group=None):
        if tu.get_non_tensor_data(data=data, key=ON_POLICY, default=False):
            log_probs = no_padding_2_padding(model_output["log_probs"], data).detach()  # (b, R), as the loss pads them
            data["old_log_probs"] = log_probs
            if "rollout_log_probs" in data.keys():  # a server engine with engine_log_probs=false returns none
                padded = data.select("response_mask", "rollout_log_probs").to_padded_tensor()  # (b, R) each
                self.on_policy_rows.append((log_probs, padded["rollout_log_probs"], padded["response_mask"].bool()))
        return losses.ppo_loss(self.config, model_output, data, dp_group)

    def rollout_corr_metrics(self) -> dict:
        """verl's rollout-correction metrics over the rows kept since the last call, each as a one-value list like
        the loss's per-micro-batch metrics; {} when the update was not on-policy or the sampler gave no log-probs."""
        if not self.on_policy_rows:
            return {}
        width = max(log_probs.shape[1] for log_probs, _, _ in self.on_policy_rows)
        log_probs, rollout_log_probs, mask = (torch.cat([F.pad(t, (0, width - t.shape[1])) for t in column])
                                              for column in zip(*self.on_policy_rows))  # (B, R) each
        self.on_policy_rows = []
        return {key: [value] for key, value in compute_rollout_corr_metrics_from_logprobs(log_probs, rollout_log_probs,
                                                                                       mask).items()}


def rollout_corr_once_per_update(engine):
    """After each of the engine's forward-and-backward passes with a PPOLoss, add the loss's rollout-correction
    metrics to the pass's metrics (verl's train_batch hands those on to the update's output)."""
    forward_backward = engine.forward_backward_batch

    def forward_backward_batch(data, loss_function, forward_only=False):
        if not isinstance(loss_function, PPOLoss):
            return forward_backward(data, loss_function, forward_only=forward_only)
        loss_function.on_policy_rows = []  # none left from a pass that failed
        outputs = forward_backward(data, loss_function, forward_only=forward_only)
        outputs["metrics"].update(loss_function.rollout_corr_metrics())
        return outputs

    engine.forward_backward_batch = forward_backward_batch
