"""Planners: from channel groups and a target to a :class:`~mrp_gpu.plan.PruningPlan`.

``plan_mrp`` (:mod:`.mrp`) is Maximum Redundancy Pruning: a replace rule (:mod:`.rules`)
says which channel of a group goes next, an allocation (:mod:`.allocation`) says which
group, over a live state of the groups (:mod:`.state`). ``plan_global`` and
``plan_uniform`` (:mod:`.baselines`) are the classic static-score planners. All of them
spend a :class:`Budget` (:mod:`.budget`) towards a :class:`Target`.
"""

from .allocation.uniform import allocate
from .baselines import plan_from_orders, plan_global, plan_uniform
from .budget import Budget, Target
from .mrp import calibrate, plan_mrp, removal_order
from .rules import RULES, Rule, register

__all__ = ["Target", "Budget", "allocate", "plan_from_orders", "plan_global", "plan_uniform", "plan_mrp",
           "removal_order", "calibrate", "RULES", "Rule", "register"]
