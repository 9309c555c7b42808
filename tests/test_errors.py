"""Every failure inside the pipeline becomes one ModelError naming the stage (and the layer)."""

import time

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from mrp_gpu.api import execute, masked_vs_sliced
from mrp_gpu.cli import main
from mrp_gpu.config import MRPConfig
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.errors import ModelError, stage


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("injected")


def test_stage_names_the_stage_and_the_running_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Boom()))
    with pytest.raises(ModelError, match=r"^checking failed at 1\.1 \(Boom\): RuntimeError: injected") as e:
        with stage("checking", model):
            model(torch.zeros(1, 3, 8, 8))
    assert isinstance(e.value.__cause__, RuntimeError)  # the original stays chained


def test_stage_lets_user_errors_and_interrupts_through():
    with pytest.raises(ModelError, match="^as it was$"), stage("x"):
        raise ModelError("as it was")
    with pytest.raises(KeyboardInterrupt), stage("x"):
        raise KeyboardInterrupt


def _raise(*_a, **_k):
    raise RuntimeError("injected")


# (stage named in the message, what to break)
INJECTIONS = [
    ("dependency tracer cannot follow", "torch_pruning.DependencyGraph.build_dependency"),
    ("grouping failed", "mrp_gpu.dependency.groups.side"),
    ("features failed", "mrp_gpu.redundancy.features.weight_matrix"),
    ("planning failed", "mrp_gpu.pruner.allocation.uniform.allocate"),
    ("slicing failed", "mrp_gpu.executor._fold_merges"),
    ("saving failed", "mrp_gpu.executor.save_pruned"),
]


@pytest.mark.parametrize("message,target", INJECTIONS, ids=[m.split()[0] for m, _ in INJECTIONS])
def test_a_failure_at_any_stage_is_one_message_and_writes_nothing(message, target, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(target, _raise)
    out = tmp_path / "out"
    assert main(["prune", "demo", "--target-flops", "0.3", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "injected" in err and "Traceback" not in err
    assert not out.exists()


def test_a_trace_that_does_not_end_is_stopped(tmp_path, capsys, monkeypatch):
    def hang(*_a, **_k):
        time.sleep(30)

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", hang)
    t0 = time.perf_counter()
    assert main(["prune", "demo", "--target-flops", "0.3", "--trace-timeout", "0.5",
                 "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - t0 < 20
    assert "did not finish CifarResNet within 0.5 s" in capsys.readouterr().err


def test_refit_and_check_failures_name_their_stage(resnet20, monkeypatch):
    from mrp_gpu.api import plan

    groups = build_groups(resnet20, (3, 32, 32))
    p = plan(resnet20, (3, 32, 32), target_flops=0.3, method="l1", groups=groups)
    monkeypatch.setattr("mrp_gpu.refit.input_rows", _raise)
    with pytest.raises(ModelError, match="^refit failed.*injected"):
        execute(resnet20, p, groups, MRPConfig(refit=True), torch.randn(8, 3, 32, 32))
    with pytest.raises(ModelError, match=r"^checking the sliced model failed at 0 \(Boom\)"):
        masked_vs_sliced(resnet20, p, nn.Sequential(Boom()), groups)
