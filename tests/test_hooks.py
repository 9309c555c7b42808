"""Hooks go on a user's model all or none: a layer name that fails to register leaves none behind."""

import pytest
import torch
import torch.nn as nn

from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.hooks import hooked
from mrp_gpu.redundancy.calibration import measure
from mrp_gpu.refit import forward_order


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_a_failed_registration_removes_the_hooks_before_it():
    model = _model()
    with pytest.raises(AttributeError):
        with hooked(model.get_submodule(n).register_forward_hook(lambda *a: None) for n in ("0", "2", "nope")):
            pass
    assert _hooks(model) == 0
    with hooked(model.get_submodule(n).register_forward_pre_hook(lambda *a: None) for n in ("0", "2")):
        assert _hooks(model) == 2
    assert _hooks(model) == 0


def test_the_calibration_pass_and_the_refit_order_leave_no_hook_on_failure():
    model, images = _model().eval(), torch.randn(4, 1, 8, 8)
    groups = build_groups(model, (1, 8, 8))
    with pytest.raises(AttributeError):
        measure(model, groups, images, features=True, consumers=["2", "4", "missing"])
    assert _hooks(model) == 0
    with pytest.raises(AttributeError):
        forward_order(model, {"0", "2", "missing"}, images)
    assert _hooks(model) == 0
