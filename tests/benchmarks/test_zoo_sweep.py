"""Every torchvision classifier is pruned correctly by MRP, or refused with a clear reason.

The default run checks a fast subset; ``-m slow`` checks every model against the
results committed in benchmarks/results/zoo.json (what the README's table shows).
"""

import json
import sys
from pathlib import Path

import pytest

from mrp_gpu.errors import MRPError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from zoo_sweep import check_model

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "zoo.json"
FAST = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_0", "mnasnet0_5", "googlenet",
        "convnext_tiny", "regnet_x_400mf", "shufflenet_v2_x0_5"]


@pytest.mark.parametrize("name", FAST)
def test_fast_subset_is_pruned_and_verified(name):
    record = check_model(name, 0.3)
    assert record["macs_reduction"] >= 0.3
    assert record["max_abs_diff_masked_vs_sliced"] < 1e-2


@pytest.mark.parametrize("name,reason", [("timm/nf_resnet26", "NormFreeNet has no channel group mrp_gpu can prune")])
def test_unsupported_models_are_refused_by_name(name, reason):
    with pytest.raises(MRPError, match=reason):
        check_model(name, 0.3)


def _committed():
    if not RESULTS.is_file():
        return []
    return [(r["model"], r["status"]) for r in json.loads(RESULTS.read_text())["models"]]


@pytest.mark.slow
@pytest.mark.parametrize("name,status", _committed())
def test_every_torchvision_model_matches_the_committed_sweep(name, status):
    if status in ("pruned", "partly pruned"):
        check_model(name, 0.3)
    else:
        with pytest.raises(MRPError):
            check_model(name, 0.3)
