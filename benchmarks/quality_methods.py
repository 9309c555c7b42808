"""The methods of ``quality.py``: names parsed into configs, labels, and one pruning per method.

A method is ``base[field=value;...]``: a base (``METHODS``) and the ``MRPConfig`` fields
its brackets change. A run is labelled by how its config differs from today's defaults,
so committed rows keep true names when the defaults change.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import quality_tp
import study_rules  # noqa: F401  rules of older rows (mrp[replace=error], ...)
import torch
import torch.nn as nn

from mrp_gpu.api import execute
from mrp_gpu.api import plan as make_plan
from mrp_gpu.config import PAPER, MRPConfig
from mrp_gpu.criteria import group_scores
from mrp_gpu.dependency.self_attention import traced
from mrp_gpu.errors import MRPError
from mrp_gpu.executor import slice_model
from mrp_gpu.integrations.torch_pruning import refit as tp_refit
from mrp_gpu.pruner import plan_from_orders

METHODS = ("mrp", "mrp-paper", "l1", "fpgm", "random", "uniform", "mrp-alloc+l1", "uniform+mrp", *quality_tp.METHODS)
# MRPConfig fields that left the product, at the value every run without them had: older rows keep their labels
RETIRED = {"bn_scale": False, "corrected_dim": True, "floor_communities": False}
MRP_BASES = {"mrp", "mrp-paper", "uniform+mrp", "mrp-alloc+l1"}


def _parse(method: str, seed: int) -> tuple[str, MRPConfig, dict]:
    """``base[field=value;...]`` -> (base, its MRPConfig, the fields changed in brackets)."""
    base, _, rest = method.partition("[")
    if base not in METHODS:
        raise SystemExit(f"unknown method {base!r}; choose from {', '.join(METHODS)}")
    config = MRPConfig(seed=seed)
    if base == "uniform+mrp":
        config = config.replace_with(allocation="uniform")
    if base == "mrp-paper":
        config = config.replace_with(**PAPER)
    if base == "mrp-alloc+l1":  # MRP's own allocation, the SRP loop
        config = config.replace_with(allocation="srp")
    if base not in MRP_BASES:  # a baseline: data-free, no refit unless asked for
        config = config.replace_with(features="weight", refit=False)
    fields = {f.name: str(f.type) for f in dataclasses.fields(config)} | {k: "bool" for k in RETIRED}
    changes = {}
    for item in filter(None, rest.rstrip("]").split(";")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"{method}: unknown MRPConfig field {key!r}")
        cur = getattr(config, key, None)
        if value in ("None", "none"):
            changes[key] = None
        elif "bool" in fields[key]:
            changes[key] = value in ("1", "true", "True")
        elif isinstance(cur, str):
            changes[key] = value
        else:  # numbers: an integral value stays an int (counts), otherwise a float (fractions)
            number = float(value)
            changes[key] = int(number) if number.is_integer() else number
    return base, config, changes


def parse_method(method: str, seed: int) -> tuple[str, MRPConfig]:
    """``base[field=value;...]`` -> (base, MRPConfig with those fields)."""
    base, config, changes = _parse(method, seed)
    if set(changes) & set(RETIRED):
        raise SystemExit(f"{method}: {', '.join(sorted(set(changes) & set(RETIRED)))} left MRPConfig; "
                         "committed rows with it still summarise, new runs cannot be made")
    return base, config.replace_with(**changes)


def label(base: str, config: dict) -> str:
    """A run's name: its base, plus how its config differs from today's defaults (MRP's
    resolved with data, as this benchmark always has it; a baseline's: no refit)."""
    if base == "uniform+mrp":  # an alias, named by what it is: MRP with a uniform allocation
        base = "mrp"
    if base in MRP_BASES:
        defaults = MRPConfig(seed=config.get("seed", 0)).resolved(has_data=True).to_dict()
        if base == "mrp-paper":
            defaults.update(PAPER)
        if base == "mrp-alloc+l1":
            defaults["allocation"] = "srp"
    else:
        defaults = {"refit": False, "min_channels": 1, "calib_size": MRPConfig.calib_size,  # what a baseline reads
                    "distill": 0, "distill_size": MRPConfig.distill_size}
    if base in MRP_BASES:
        defaults |= RETIRED
        if config.get("refit"):  # the refit replaces the merges: compensate changed nothing
            defaults.pop("compensate", None)
        elif base != "mrp-paper":  # compensate "auto": on without the refit
            defaults["compensate"] = True
    diff = {k: v for k, v in config.items() if k in defaults and k not in ("seed", "version") and defaults[k] != v}
    if not diff:
        return base
    show = {True: "1", False: "0"}
    return base + "[" + ";".join(f"{k}={show.get(v, v) if isinstance(v, bool) else v}"
                                 for k, v in sorted(diff.items())) + "]"


def prune(base: str, config: MRPConfig, model, size, target, calibration, labels=None, tp_cache=None):
    """(pruned model, MACs reduction, kept counts per group) for one method.

    A Torch-Pruning pruning is kept in ``tp_cache`` (a dict) for the next run of the same
    criterion, target and (for the data-driven ones) seed: its ``[refit=1]`` twin refits
    that same pruned model."""
    if base == "none":
        return copy.deepcopy(model), 0.0, {}
    if base in quality_tp.METHODS:
        tp_cache = {} if tp_cache is None else tp_cache
        key = (base, target, config.seed if base in quality_tp.NEEDS_DATA else None)
        if tp_cache.get("key") != key:
            tp_cache.update(zip(("pruned", "reduction", "pruner"),
                                quality_tp.prune(base, model, size, target, calibration, labels)), key=key)
        pruned = copy.deepcopy(tp_cache["pruned"])
        if config.refit:
            tp_refit(model, pruned, calibration, tp_cache["pruner"])
        return pruned, tp_cache["reduction"], {}
    model, groups = traced(model, size)  # as every mrp_gpu entry point prunes it: self-attention in heads
    if base == "mrp-alloc+l1":
        counts = make_plan(model, size, target_flops=target, config=config, groups=groups,
                           calibration=calibration)
        orders = [np.argsort(s, kind="stable") for s in group_scores(model, groups, "l1")]
        p = plan_from_orders(groups, [counts.kept_count(g) for g in groups.ids], orders, model="model",
                             method="mrp-alloc+l1", config=config.to_dict())
    else:
        method = "mrp" if base in MRP_BASES else base
        p = make_plan(model, size, target_flops=target, method=method, config=config, groups=groups,
                      calibration=calibration)
    source, p = execute(model, p, groups, config, calibration)
    return slice_model(source, p, groups), p.macs_reduction, {g: p.kept_count(g) for g in groups.ids}


def reinit(model: nn.Module, seed: int) -> nn.Module:
    """Fresh weights for a (pruned) architecture, initialised as the zoo's models are."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def _base_config(method: str) -> tuple[str, dict]:
    """The resolved config a method names, as its rows record it. A method of committed rows only
    (a retired field, an allocation or rule that left the product) gets its changes written
    over the resolved base config."""
    base, config, changes = _parse(method, 0)
    try:
        return base, config.replace_with(**changes).resolved(has_data=True).to_dict()
    except (MRPError, TypeError):
        return base, config.resolved(has_data=True).to_dict() | changes
