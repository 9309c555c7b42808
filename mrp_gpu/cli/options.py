"""The ``MRPConfig`` flags of ``prune``, ``analyze`` and ``bench``, generated from one table.

Each field of :class:`~mrp_gpu.config.MRPConfig` becomes ``--field-name`` with the
field's default; :func:`config_from_args` reads them back by the same names, so a field
is listed once, here.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..config import ALLOCATIONS, FEATURES, PAPER, MRPConfig

__all__ = ["add_config_args", "config_from_args"]


def _count_or_fraction(text: str) -> float:
    v = float(text)
    if v >= 1 and not v.is_integer():
        raise argparse.ArgumentTypeError(f"a count (a whole number >= 1) or a fraction in (0, 1), got {text}")
    return int(v) if v >= 1 else v


# field -> (group, help); the type, choices and default come from the field
_HELP = {
    "features": ("rmcd", "per-channel features: weight (data-free), activation, auto (activation with --data)"),
    "z": ("rmcd", "one z for every group: tau_g = z / sqrt(d_g) (default: per group, from --chance-degree)"),
    "chance_degree": ("rmcd", "chance neighbours per channel the default threshold allows (default %(default)s)"),
    "tau": ("rmcd", "absolute cosine threshold for every group (overrides --z)"),
    "k_max": ("rmcd", "at most this many strongest neighbours per channel"),
    "resolution": ("rmcd", "Louvain's modularity resolution (default %(default)s)"),
    "similarity": ("rmcd", "graph builder: torch, or the fused Numba CUDA kernel (GPU)"),
    "backend": ("rmcd", "Louvain engine: auto, numba, igraph, leiden, torch, cugraph, networkx"),
    "device": ("rmcd", "auto, cpu or cuda"),
    "seed": ("rmcd", "seed of Louvain and of every random choice (default %(default)s)"),
    "replace": ("srp", "which channel goes next: auto (rebuild with --data, error-in-community without), or a "
                       "rule of mrp_gpu.pruner.rules"),
    "compensate": ("srp", "fold removed channels into their most similar community partner (default: when there "
                          "is no refit)"),
    "refit": ("srp", "refit the layers that read pruned channels by least squares on --data training images "
                     "(default: with --data)"),
    "step": ("srp", "channels per iteration: a count, or a fraction (<1) of the group's width"),
    "min_channels": ("srp", "channels every group keeps: a count, or a fraction (<1) of its width"),
    "round_to": ("srp", "keep channel counts multiples of this (default %(default)s: off)"),
    "cost_aware": ("srp", "allocation srp: rank groups by R times the MACs a channel costs"),
    "allocation": ("srp", "how the cut is spread over layers: auto (loss with --data, uniform without), uniform, "
                          "loss (the layer whose next channel costs least per MAC saved), srp (the paper's loop)"),
    "refresh_every": ("srp", "weight features: refresh the graphs of changed groups every this many iterations"),
    "calib_size": ("rmcd", "calibration images drawn from --data (default %(default)s)"),
    "pool": ("rmcd", "activation maps are average-pooled to POOL x POOL (default %(default)s)"),
    "distill": ("srp", "after slicing, Adam steps that train the pruned model towards the unpruned one's logits "
                       "on --data training images, no labels (default %(default)s: off; 1000 is a good start)"),
    "distill_size": ("srp", "training images the distillation draws from --data (default %(default)s)"),
}
_CHOICES = {"features": FEATURES, "allocation": ALLOCATIONS, "similarity": ("torch", "kernel")}


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Every ``MRPConfig`` field as a flag, plus ``--data``, ``--data-root`` and ``--paper``."""
    groups = {"rmcd": p.add_argument_group("redundancy (RMCD) options"),
              "srp": p.add_argument_group("pruning (SRP) options")}
    groups["rmcd"].add_argument("--data", help="dataset for calibration images and accuracy (e.g. fashion-mnist)")
    groups["rmcd"].add_argument("--data-root", help="where the dataset lives (default: its standard place)")
    for f in dataclasses.fields(MRPConfig):
        group, help_text = _HELP[f.name]
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool) or f.name in ("refit", "compensate"):
            groups[group].add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif f.name in ("step", "min_channels"):
            groups[group].add_argument(flag, type=_count_or_fraction, default=f.default, help=help_text)
        elif f.default is None:
            groups[group].add_argument(flag, type=int if f.name == "k_max" else float, help=help_text)
        else:
            groups[group].add_argument(flag, type=type(f.default), default=f.default, choices=_CHOICES.get(f.name),
                                       help=help_text)
    groups["srp"].add_argument("--paper", action="store_true",
                               help="MRP as published: " + ", ".join(f"{k}={v}" for k, v in PAPER.items())
                               + " (overrides those options)")


def config_from_args(args) -> MRPConfig:
    config = MRPConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MRPConfig)})
    return config.replace_with(**PAPER) if args.paper else config
