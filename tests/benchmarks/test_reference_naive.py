"""The naive baseline must be the same method as mrp_gpu, or its timings compare nothing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from reference_naive import naive_plan

from mrp_gpu.api import plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.models import create_model


def test_naive_reference_picks_the_same_first_layers_as_mrp_gpu():
    model = create_model("demo")
    groups = build_groups(model, (1, 28, 28))
    naive, times = naive_plan(model, groups, 0.5, max_steps=30)
    ours = plan(model, (1, 28, 28), target_flops=0.5, groups=groups,
                config=MRPConfig(backend="networkx", refresh_every=1, cost_aware=False, allocation="srp",
                                 replace="norm-in-community"))
    assert len(times) == 30
    pick = [(t["group"], t["channel"]) for t in naive.trajectory]
    assert pick == [(t["group"], t["channel"]) for t in ours.trajectory[:30]]
    assert [round(t["R_before"], 6) for t in naive.trajectory] == [t["R_before"] for t in ours.trajectory[:30]]
