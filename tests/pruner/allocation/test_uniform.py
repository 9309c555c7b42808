import numpy as np

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.pruner import Target, allocate


def test_allocate_cuts_the_same_fraction_and_gives_the_overshoot_back(resnet20_groups):
    counts = allocate(resnet20_groups, Target(flops=0.4))
    sizes = resnet20_groups.sizes
    frac = 1 - counts / sizes
    assert frac.max() - frac.min() <= 1 / 16 + 1e-9
    macs = resnet20_groups.cost.macs
    assert 1 - macs(counts) / macs() >= 0.4
    for g in range(len(sizes)):  # one more channel anywhere misses the target: nothing is left to give back
        if counts[g] < sizes[g]:
            more = counts.copy()
            more[g] += 1
            assert 1 - macs(more) / macs() < 0.4


def test_uniform_mrp_keeps_the_counts_and_takes_mrp_order_inside(demo):
    p = plan(demo, (1, 28, 28), target_flops=0.5, config=MRPConfig(allocation="uniform"), model_name="demo")
    assert p.macs_reduction >= 0.5
    fracs = [1 - p.kept_count(g) / n for g, n in p.sizes.items()]
    assert max(fracs) - min(fracs) < 0.1
    assert p.merges and all(m["channel"] in p.removed(m["group"]) for m in p.merges)
    assert np.isfinite(list(p.config["redundancy_after"].values())).all()
