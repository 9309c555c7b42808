"""``plan_mrp``: Maximum Redundancy Pruning, from channel groups and a target to a :class:`PruningPlan`.

The config is resolved (:meth:`MRPConfig.resolve`), the features the resolved rule and
allocation read are computed, and the allocation runs: ``uniform``
(:mod:`.allocation.uniform`), or the greedy loop of ``srp`` or ``loss``
(:mod:`.greedy`). Nothing is computed that the resolved config does not read: with the
data defaults (``rebuild``, ``loss``, the refit) no graph is built, no Louvain runs and no
merge is made.
"""

from __future__ import annotations

import numpy as np

from ..dependency.groups import ChannelGroups
from ..errors import stage
from ..plan import PruningPlan
from ..redundancy.calibration import Calibration, measure
from ..redundancy.features import GroupFeatures, compute_features
from ..timing import Stopwatch
from .allocation.uniform import group_steps, plan_uniform_mrp
from .budget import Budget, Target
from .greedy import greedy_plan
from .rules import RULES
from .state import PlannerState, reads_grams
from .state.losses import rebuild_consumers

__all__ = ["plan_mrp", "removal_order", "calibrate"]


def calibrate(model, groups: ChannelGroups, config, data, *, progress: bool = False) -> Calibration | None:
    """The calibration pass a resolved ``config`` reads, on ``data`` (images, or a
    :class:`Calibration` measured before: only what it lacks is measured); None without data.

    Activation features when the plan reads features and they are ``activation``; the
    input covariances of the ``rebuild`` loss's consumers when the rule ranks by it.
    """
    if data is None:
        return None
    if isinstance(data, Calibration):
        data.validate(model, groups)
        cal = data
    else:
        cal = Calibration(data)
    features = config.features == "activation" and reads_grams(config) and cal.features is None
    consumers = ([n for n in rebuild_consumers(model, groups) if n not in cal.covariances and n not in cal.unseen]
                 if RULES[config.replace].loss == "rebuild" else [])
    if not (features or consumers):
        return cal
    with stage("the calibration pass", model):
        new = measure(model, groups, cal.images, features=features, consumers=consumers, pool=config.pool,
                      seed=config.seed, progress=progress)
    return Calibration(cal.images, cal.features if cal.features is not None else new.features,
                       cal.covariances | new.covariances, cal.unseen | (set(consumers) - set(new.covariances)))


def _state(model, groups: ChannelGroups, config, device, calibration, stopwatch: Stopwatch | None) -> PlannerState:
    sw = stopwatch or Stopwatch(device)
    with sw.lap("calibration"):
        cal = calibrate(model, groups, config, calibration)
    feats = None
    if reads_grams(config):
        with sw.lap("features"), stage("features", model):
            if config.features == "activation" and cal is not None:
                feats = GroupFeatures(cal.features.ids, tuple(r.to(device) for r in cal.features.rows))
            else:
                feats = compute_features(model, groups, features=config.features, calibration=None,
                                         pool=config.pool, device=device)
    return PlannerState(model, groups, config, feats, device, cal)


def _progress_bar(target: Target | None, enabled: bool):
    """A tqdm bar of the way to the target, and the callback the loop feeds it."""
    from tqdm.auto import tqdm

    goal = None if target is None else (target.flops if target.flops is not None else target.params)
    bar = tqdm(total=1000, desc="MRP", disable=not enabled or goal is None, leave=False)

    def update(budget: Budget) -> None:
        macs, params = budget.reductions()
        done = macs if target.flops is not None else params
        bar.update(max(0, int(1000 * min(done / goal, 1.0)) - bar.n))

    return bar, (update if goal is not None else None)


def plan_mrp(model, groups: ChannelGroups, target: Target | None, config, *, model_name: str = "model",
             progress: bool = False, calibration=None, stopwatch: Stopwatch | None = None) -> PruningPlan:
    """Maximum Redundancy Pruning of ``groups`` to ``target`` (docs/method.md, section 7).

    ``config`` may hold ``auto`` choices: they are made here, from whether
    ``calibration`` images are given and from the groups. With ``target=None``
    (``allocation="srp"`` or ``"loss"``) the loop runs until no group can shrink: the
    trajectory is then MRP's complete removal order.
    """
    from ..finetune import resolve_device

    config, why = config.resolve(calibration is not None)
    device = resolve_device(config.device)
    budget = Budget(groups, target, min_channels=config.min_channels, round_to=config.round_to, step=config.step)
    state = _state(model, groups, config, device, calibration, stopwatch)
    R0 = None
    if state.communities is not None:  # one batched Louvain call: every group's R before pruning
        state.refresh(list(range(len(groups))))
        R0 = state.R.copy()
    notes = []
    if config.allocation == "uniform":
        budget, trajectory, merges, R1 = plan_uniform_mrp(state, target, config)
    else:
        bar, update = _progress_bar(target, progress)
        try:
            trajectory, merges, fallbacks, it = greedy_plan(state, budget, target, config, update)
        finally:
            bar.close()
        R1 = state.R.copy() if R0 is not None else None
        if fallbacks:
            notes.append(f"{fallbacks} of {it} iterations fell back to the smallest-norm channel of the group "
                         "with the largest MACs share: no group that could still shrink had a community of two")
    cfg = config.to_dict() | {"auto": why}
    if R0 is not None:
        cfg |= {"redundancy_before": dict(zip(groups.ids, np.round(R0, 6).tolist())),
                "redundancy_after": dict(zip(groups.ids, np.round(R1, 6).tolist()))}
    return budget.to_plan(model_name, "mrp", cfg, trajectory, notes, merges)


def removal_order(model, groups: ChannelGroups, group: str, config,
                  calibration=None) -> tuple[list[int], list[dict | None]]:
    """Every channel of one group, most replaceable first, by repeated MRP removal.

    The group alone goes through the SRP step until one channel is left: remove the
    rule's channel, recompute the group's graph and communities. A prefix of the order is
    what MRP would prune from this layer. Also returns, for each removal, the merge
    ``compensate`` would make (None for a channel alone in its community, or without
    ``compensate``).
    """
    from ..finetune import resolve_device

    config = config.resolved(calibration is not None)
    device = resolve_device(config.device)
    state = _state(model, groups, config, device, calibration, None)
    g = groups.index(group)
    steps = group_steps(state, g, step=config.step, partners=bool(config.compensate))
    order = [t["channel"] for t in steps]
    return order + sorted(set(range(groups[g].size)) - set(order)), [t["merge"] for t in steps]
