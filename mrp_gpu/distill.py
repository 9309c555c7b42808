"""Distillation after slicing: the pruned model trained towards the unpruned one's logits, no labels.

The least-squares refit rebuilds each consumer layer from what its inputs still carry;
what it cannot undo is the error the layers pass on to one another. Post-training
quantisation closes such a gap with a few gradient steps that match the original
model's outputs on a handful of training images (BRECQ and its kin); this is the
architecture-free form of that, a short logit distillation: Adam on the squared error
between the pruned and the unpruned model's logits, on the *sliced* model (a masked
one would bring the removed weights back).

BN statistics are re-estimated once on the distillation images and then stay frozen,
both models in eval mode: the steps fit the weights to those statistics, and
re-estimating them after the steps takes back part of what the steps gained. Where the
distillation images are more than the refit's calibration images (the command line's
``--distill-size``), the steps also start from better statistics than the refit's.

The learning rate defaults to ``LR`` (the command line offers no other): ten times
that knocked ResNet-56 down by 30 points in the screen that chose it
(``benchmarks/reconstruct_study.py``), while ``LR`` helped or was neutral on the three
models screened.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import MRPError, stage
from .finetune import recalibrate_bn

__all__ = ["distill", "LR", "BATCH"]

LR = 3e-4
BATCH = 64


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random horizontal flip per image and one random shift of up to 1/16 of the side
    (2 pixels at 32), zero-filled, per batch: the images seen never repeat exactly."""
    flip = (torch.rand(len(x), generator=g) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    s = max(1, round(x.shape[2] / 16))
    i, j = torch.randint(0, 2 * s + 1, (2,), generator=g).tolist()
    return F.pad(x, (s, s, s, s))[:, :, i:i + x.shape[2], j:j + x.shape[3]]


def _logits(out, who: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise MRPError(f"distillation matches logits: the {who} model returned a {type(out).__name__}, "
                       "not one tensor")
    return out


def distill(student: nn.Module, teacher: nn.Module, images: torch.Tensor, *, steps: int, lr: float = LR,
            seed: int = 0, progress: bool = False) -> nn.Module:
    """Train ``student`` in place for ``steps`` Adam steps towards ``teacher``'s logits.

    Parameters
    ----------
    student : nn.Module
        The pruned (sliced) model; its parameters change, its BN statistics are
        re-estimated on ``images`` before the first step and frozen from then on.
    teacher : nn.Module
        The unpruned model; left as it is (its train/eval mode included).
    images : Tensor
        ``(N, C, H, W)`` training images (no labels are read); batches of ``BATCH`` are
        drawn from them with replacement, flipped and shifted.
    steps : int
        Adam steps (cosine schedule from ``lr`` to 0); 0 leaves ``student`` unchanged.
    lr : float
        Adam's initial learning rate.
    seed : int
        Seed of the batches and the augmentation.

    Returns
    -------
    nn.Module
        ``student``, in eval mode.
    """
    if steps < 0:
        raise MRPError(f"distill must be a number of steps >= 0, got {steps}")
    if images.dim() != 4 or len(images) == 0:
        raise MRPError(f"distillation needs images of shape (N, C, H, W), got {tuple(images.shape)}")
    student.eval()
    if steps == 0:
        return student
    device = next(student.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    was = teacher.training
    teacher.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="distill", leave=False)
    try:
        with stage("distillation", student), torch.enable_grad():
            recalibrate_bn(student, images)
            for _ in range(steps):
                x = _augment(images[torch.randint(0, len(images), (BATCH,), generator=g)].to(device), g)
                with torch.no_grad():
                    target = _logits(teacher(x), "unpruned")
                loss = F.mse_loss(_logits(student(x), "pruned"), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
                if bar is not None:
                    bar.update()
                    bar.set_postfix(mse=f"{loss.item():.3g}", refresh=False)
    finally:
        teacher.train(was)
        if bar is not None:
            bar.close()
    return student
