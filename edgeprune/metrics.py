"""Loss, predictions, accuracy and macro-F1 for both heads (softmax over C, or one sigmoid logit)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def loss_fn(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, times T^2 so its gradients keep the
    scale of the label loss (Hinton et al. 2015). One logit means a sigmoid: the two-class KL."""
    t = temperature
    if logits.shape[-1] == 1:
        p = torch.sigmoid(teacher[:, 0] / t)
        entropy = F.binary_cross_entropy(p, p, reduction="mean")  # KL = cross-entropy - entropy
        return (F.binary_cross_entropy_with_logits(logits[:, 0] / t, p) - entropy) * t * t
    return (
        F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean")
        * t
        * t
    )


def training_loss(
    logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None, distill: float, temperature: float
) -> torch.Tensor:
    """The loss training minimizes: the label loss, mixed with the distillation loss by weight
    `distill` once there are teacher outputs for this batch."""
    loss = loss_fn(logits, y)
    if teacher is None:
        return loss
    return (1 - distill) * loss + distill * distill_loss(logits.float(), teacher, temperature)


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Class ids: one logit means sigmoid (class 1 when > 0), more mean argmax."""
    return (logits[:, 0] > 0).long() if logits.shape[-1] == 1 else logits.argmax(dim=-1)


def f1_score(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Macro-F1 for any number of classes: the unweighted mean of the per-class F1 over the classes
    present in the labels or the predictions (scikit-learn's f1_score(average="macro"))."""
    idx = y * num_classes + pred
    cm = torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).double()
    tp = cm.diag()
    present = cm.sum(0) + cm.sum(1)
    if not (present > 0).any():
        return 0.0
    return float((2 * tp / present.clamp(min=1))[present > 0].mean())


def majority_share(y: torch.Tensor) -> float:
    """The share of the most frequent class: the accuracy of always guessing it."""
    return float(torch.bincount(y).max()) / len(y) if len(y) else 0.0
