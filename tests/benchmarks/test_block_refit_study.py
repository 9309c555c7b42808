"""The block-output refit recovers a block that lost nothing, and its page reads the runs."""

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from block_refit_study import block_refit, markdown

from mrp_gpu.models import create_model


def test_an_unpruned_model_is_refit_to_itself():
    torch.manual_seed(0)
    model = create_model("demo", weights=None).eval()
    with torch.no_grad():  # a shortcut error to make up for: the refit must absorb it through conv2
        model.layer2[0].shortcut[0].weight.mul_(1.5)
    original = create_model("demo", weights=None).eval()
    original.load_state_dict(model.state_dict())
    with torch.no_grad():
        original.layer2[0].shortcut[0].weight.div_(1.5)
    images = torch.randn(64, 1, 28, 28)
    masked = copy.deepcopy(model)
    block_refit(original, masked, images, ridge=1e-6)
    with torch.no_grad():
        ref, before, after = original(images), model(images), masked(images)
    assert (after - ref).norm() < 0.2 * (before - ref).norm()  # the block sum is matched again
    assert not torch.equal(masked.layer2[0].conv2.weight, model.layer2[0].conv2.weight)


def test_the_page_averages_the_gain_per_cell():
    runs = [{"model": "demo", "target": 0.5, "seed": s, "default": 92.0, "block": 92.0 + d, "default_s": 0.0,
             "block_s": 1.0} for s, d in enumerate((0.1, 0.3))]
    page = markdown({"command": "c", "date": "d", "machine": "m", "grid": {"demo": (0, 1)}, "targets": [0.5],
                     "runs": runs})
    assert "| demo | -50% | 92.00 | 92.20 | +0.20 ± 0.14 | 2 | 1.0 |" in page
