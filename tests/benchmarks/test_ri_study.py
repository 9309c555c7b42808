"""The RI study's rank correlation: ties share their rank, a constant side has none."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from ri_study import ranks, spearman


def test_ties_share_their_mean_rank():
    assert ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]


def test_spearman_is_undefined_for_a_constant_side_and_exact_otherwise():
    # R = 1 in every group (a threshold no pair passes) says nothing: not a correlation of +/-1
    assert math.isnan(spearman([1.0, 1.0, 1.0], [0.3, 0.1, 0.2]))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert abs(spearman([1, 2, 3, 4], [4, 3, 2, 1]) + 1.0) < 1e-12
    assert abs(spearman([1, 1, 2, 3], [1, 2, 3, 4]) - 0.9486832980505138) < 1e-12  # scipy.stats.spearmanr


def test_orders_for_every_criterion_are_permutations_of_the_group():
    from ri_study import default_criterion, orders_for

    from mrp_gpu.dependency.groups import build_groups, example_input
    from mrp_gpu.models import create_model

    model = create_model("demo")
    groups = build_groups(model, (1, 28, 28))
    orders = orders_for(model, groups, "layer1.0.conv1", seeds=[0], calibration=example_input((1, 28, 28), batch=16))
    assert default_criterion() in orders and "mrp:auto" not in orders
    assert {"mrp:default+refit", "mrp:error-in-community+refit", "l1+refit", "least-replaceable"} <= set(orders)
    for name, runs in orders.items():
        for order, _ in runs:
            assert sorted(order) == list(range(16)), name
