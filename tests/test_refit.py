import copy
import dataclasses

import numpy as np
import pytest
import torch

from mrp_gpu.api import masked_vs_sliced, plan
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.executor import slice_model
from mrp_gpu.models import create_model
from mrp_gpu.refit import refit

SIZE = (1, 28, 28)


def _error(model, pruned, x):
    with torch.no_grad():
        return float((model(x) - pruned(x)).pow(2).mean())


def test_refit_brings_the_pruned_output_closer_to_the_unpruned_one():
    model = create_model("demo")  # trained: the refit has a signal to keep
    groups = build_groups(model, SIZE)
    p = plan(model, SIZE, target_flops=0.5, method="l1", groups=groups)
    gen = torch.Generator().manual_seed(0)
    calib, held_out = torch.randn(64, *SIZE, generator=gen), torch.randn(32, *SIZE, generator=gen)
    plain = slice_model(model, p, groups)
    masked, p2 = refit(model, p, calib, groups)
    refit_model = slice_model(masked, p2, groups)
    assert p2.merges == [] and p2.kept == p.kept
    assert masked_vs_sliced(masked, p2, refit_model, groups) < 1e-4
    assert [t.shape for t in refit_model.state_dict().values()] == [t.shape for t in plain.state_dict().values()]
    assert _error(model, refit_model, held_out) < 0.5 * _error(model, plain, held_out)


def test_refit_changes_nothing_when_nothing_is_pruned_and_leaves_the_model_alone():
    model = create_model("demo")
    before = copy.deepcopy(model.state_dict())
    groups = build_groups(model, SIZE)
    p = plan(model, SIZE, target_flops=0.3, method="l1", groups=groups)
    x = torch.randn(16, *SIZE, generator=torch.Generator().manual_seed(1))
    same, _ = refit(model, dataclasses.replace(p, kept={}), x, groups)
    with torch.no_grad():
        torch.testing.assert_close(same(x), model(x))
    refit(model, p, x, groups)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ridge_keeps_collinear_inputs_solvable():
    """Two identical kept inputs make the Gram matrix singular; the ridge term solves it."""
    model = create_model("demo")
    with torch.no_grad():
        w = model.get_submodule("layer3.0.conv1").weight
        w[1] = w[0]  # channels 0 and 1 of that group are now the same feature
    groups = build_groups(model, SIZE)
    p = plan(model, SIZE, target_flops=0.3, method="l1", groups=groups)
    out = slice_model(*refit(model, p, torch.randn(16, *SIZE), groups), groups)
    assert all(torch.isfinite(t).all() for t in out.state_dict().values() if t.is_floating_point())
    assert np.isfinite(_error(model, out, torch.randn(8, *SIZE)))


@pytest.mark.gpu
def test_the_data_path_on_cuda_keeps_what_the_cpu_keeps(demo, monkeypatch):
    """Calibration pass, plan, refit and BN re-estimation on CUDA, against the same on the CPU
    (TF32 off: the comparison is of the code, not of the hardware's shortcuts)."""
    from mrp_gpu.api import prune

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x = torch.randn(128, *SIZE, generator=torch.Generator().manual_seed(0))
    cpu, p_cpu = prune(demo, SIZE, target_flops=0.5, calibration=x)
    gpu, p_gpu = prune(copy.deepcopy(demo).cuda(), SIZE, target_flops=0.5, calibration=x.cuda(),
                       config=MRPConfig(device="cuda"))
    assert next(gpu.parameters()).is_cuda and p_gpu.macs_reduction >= 0.5
    kept = sum(len(set(p_cpu.kept[g]) & set(p_gpu.kept[g])) for g in p_cpu.kept)
    assert kept >= 0.98 * sum(len(k) for k in p_cpu.kept.values())
    with torch.no_grad():
        agree = (cpu(x).argmax(1) == gpu(x.cuda()).argmax(1).cpu()).float().mean()
    assert agree >= 0.95


@pytest.mark.parametrize("side", ["mrp-refit-targets", "MainThread"])
def test_an_error_in_either_pass_stops_both_and_is_raised(demo, demo_groups, monkeypatch, side):
    import threading

    import mrp_gpu.refit as refit_module

    p = plan(demo, SIZE, target_flops=0.3, method="l1", groups=demo_groups)
    real = refit_module.input_rows
    calls = []

    def failing(layer, x, pick=None):
        calls.append(threading.current_thread().name)
        if calls.count(side) == 3:
            raise RuntimeError(f"boom in {side}")
        return real(layer, x, pick)

    monkeypatch.setattr(refit_module, "input_rows", failing)
    with pytest.raises(RuntimeError, match=f"boom in {side}"):
        refit(demo, p, torch.randn(8, *SIZE), demo_groups)
    assert not any(t.name == "mrp-refit-targets" for t in threading.enumerate())
