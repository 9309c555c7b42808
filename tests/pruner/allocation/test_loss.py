import numpy as np
import pytest

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.errors import MRPError
from mrp_gpu.pruner import calibrate


def test_loss_allocation_first_cuts_where_a_channel_costs_least_per_mac(demo, demo_groups, calib):
    from mrp_gpu.pruner.state import PlannerState

    config = MRPConfig().resolved(True)
    p = plan(demo, (1, 28, 28), target_flops=0.4, config=MRPConfig(), calibration=calib, groups=demo_groups)
    assert p.macs_reduction >= 0.4 and p.config["allocation"] == "loss" and p.config["replace"] == "rebuild"
    assert len({round(1 - p.kept_count(g) / n, 2) for g, n in p.sizes.items()}) > 1  # not one ratio everywhere
    # the first choice, recomputed group by group from the unpruned model, without the loop
    state = PlannerState(demo, demo_groups, config, None, "cpu", calibrate(demo, demo_groups, config, calib))
    savings = demo_groups.cost.savings(demo_groups.sizes)
    best = {g.id: savings[i] / max(state.loss(i).min(), 1e-12) for i, g in enumerate(demo_groups)}
    first = p.trajectory[0]
    assert first["group"] == max(best, key=best.get)
    assert first["channel"] == int(np.argmin(state.loss(demo_groups.index(first["group"]))))


def test_loss_allocation_needs_a_rule_that_supplies_a_loss(demo):
    with pytest.raises(MRPError, match="loss of a replace rule"):
        plan(demo, (1, 28, 28), target_flops=0.4, config=MRPConfig(allocation="loss", replace="norm-in-community"))
