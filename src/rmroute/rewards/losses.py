"""Reward-model training losses: Bradley–Terry (TRL's RewardTrainer) and BSR.

BSR (Hong et al., ICML 2025) adds λ·(mean of all 2B rewards in the micro-batch)² to the BT loss.
It is not TRL's `center_rewards_coefficient`, which penalises each pair's (r_w + r_l)².
"""

from __future__ import annotations

import torch
from trl import RewardTrainer


def bsr_penalty(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, coef: float, batch_scale: int = 1) -> torch.Tensor:
    """coef · batch_scale · (mean over all 2B rewards)².

    `batch_scale` makes explicit what the released code does implicitly (it multiplies λ by the
    per-device batch size once); 1 is the paper's formula.
    """
    mean_reward = torch.cat([rewards_chosen, rewards_rejected]).mean()
    return coef * batch_scale * mean_reward.pow(2)


class BSRRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer with the batch sum-to-zero penalty added to its BT loss."""

    def __init__(self, *args, bsr_coef: float = 1e-3, bsr_batch_scale: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.bsr_coef = bsr_coef
        self.bsr_batch_scale = bsr_batch_scale

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        scale = chosen.shape[0] if self.bsr_batch_scale else 1
        penalty = bsr_penalty(chosen, rejected, self.bsr_coef, scale)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["bsr_penalty"].append(penalty.item())
        loss = loss + penalty
        return (loss, outputs) if return_outputs else loss
