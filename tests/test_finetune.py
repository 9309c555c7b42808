import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import write_imagefolder
from torch.utils.data import TensorDataset

from mrp_gpu.cli import main
from mrp_gpu.errors import MRPError
from mrp_gpu.executor import load_pruned
from mrp_gpu.finetune import TrainConfig, evaluate, fit


def _toy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    return TensorDataset(x, y)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2))


def test_fit_logs_checkpoints_and_resumes(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, workers=0)
    history = fit(_net(), _toy(), _toy(seed=1), cfg, tmp_path, progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((tmp_path / "log.json").read_text()) == history
    assert (tmp_path / "log.csv").read_text().startswith("epoch,train_loss")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    more = fit(_net(), _toy(), _toy(seed=1), TrainConfig(epochs=3, batch_size=16, lr=0.05, workers=0), tmp_path,
               resume=True, progress=False)
    assert [h["epoch"] for h in more] == [1, 2, 3] and more[:2] == history


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(MRPError, match="no checkpoint"):
        fit(_net(), _toy(), _toy(), TrainConfig(epochs=1, batch_size=16, workers=0), tmp_path, resume=True,
            progress=False)
    with pytest.raises(MRPError, match="smaller than one batch"):
        fit(_net(), _toy(), _toy(), TrainConfig(epochs=1, batch_size=128, workers=0), tmp_path, progress=False)


def test_evaluate_counts_correct_answers():
    ds = _toy()
    loader = torch.utils.data.DataLoader(ds, batch_size=10)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot((x.mean((1, 2, 3)) > 0).long(), 2).float()

    r = evaluate(Oracle(), loader, "cpu")
    assert r["acc"] == 1.0 and r["n"] == 64


def test_train_prune_finetune_eval_on_an_imagefolder(tmp_path, capsys):
    data = write_imagefolder(tmp_path / "data")
    common = ["--data", "imagefolder", "--data-root", str(data), "--workers", "0", "--batch-size", "4", "--quiet"]
    assert main(["train", "resnet20", "--input-size", "3x32x32", "--epochs", "1", "--out", str(tmp_path / "t"),
                 *common]) == 0
    assert main(["prune", "resnet20", "--num-classes", "2", "--weights", str(tmp_path / "t" / "model.safetensors"),
                 "--method", "l1", "--target-flops", "0.3", "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert main(["finetune", str(tmp_path / "p"), "--epochs", "1", *common]) == 0
    tuned = load_pruned(tmp_path / "p" / "finetuned")
    assert json.loads((tmp_path / "p" / "finetuned" / "finetune.json").read_text())["epochs"] == 1
    assert tuned(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "p" / "finetuned"), "--data", "imagefolder", "--data-root", str(data)]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0


def test_torchrun_two_processes_on_cpu(tmp_path):
    """DistributedDataParallel with the gloo backend: two CPU processes train one model."""
    data = write_imagefolder(tmp_path / "data", per_class=4)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "mrp_gpu.cli", "train", "resnet20", "--input-size", "3x32x32", "--epochs", "2",
           "--data", "imagefolder", "--data-root", str(data), "--workers", "0", "--batch-size", "2",
           "--quiet", "--device", "cpu", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    log = json.loads((out / "log.json").read_text())
    assert [h["epoch"] for h in log] == [1, 2]
    assert log[0]["world_size"] == 2
    assert r.stdout.count("test accuracy") == 1  # rank 0 alone reports and writes


def test_recalibrate_bn_re_estimates_the_statistics_exactly():
    from mrp_gpu.finetune import recalibrate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    model[1].running_mean.fill_(5.0)
    x = torch.randn(40, 1, 8, 8) * 3 + 1
    recalibrate_bn(model, x, batch_size=10)
    with torch.no_grad():
        y = model[0](x)
    torch.testing.assert_close(model[1].running_mean, y.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not model.training and model[1].momentum == 0.1  # restored


def test_recalibrate_bn_does_not_run_a_model_without_bn():
    from mrp_gpu.finetune import recalibrate_bn

    class Counting(nn.Linear):
        calls = 0

        def forward(self, x):
            Counting.calls += 1
            return super().forward(x)

    model = nn.Sequential(Counting(4, 2)).train()
    assert recalibrate_bn(model, torch.randn(8, 4)) is model and not model.training
    assert Counting.calls == 0
