import json

import pytest
import torch
import torch_pruning as tp

from mrp_gpu.cli import main
from mrp_gpu.dependency.groups import example_input
from mrp_gpu.executor import load_pruned


def test_prune_l1_resnet56_and_reload(tmp_path, capsys):
    out = tmp_path / "D"
    assert main(["prune", "resnet56", "--method", "l1", "--target-flops", "0.5", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.50 <= summary["macs_reduction"] <= 0.55
    assert summary["max_abs_diff_masked_vs_sliced"] < 1e-3
    stages = summary["stages"]
    assert list(stages)[:3] == ["load", "data", "trace"] and {"plan", "slice", "check", "save"} <= set(stages)
    assert "features" not in stages  # l1 computes no features
    assert sum(stages.values()) <= summary["seconds"] + 0.01  # each rounded to 1 ms
    for f in ("plan.json", "model.safetensors", "arch.json", "summary.json"):
        assert (out / f).is_file()
    model = load_pruned(out)
    x = example_input((3, 32, 32))
    assert tp.utils.count_ops_and_params(model, x)[0] == summary["macs_after"]
    assert "MACs" in capsys.readouterr().out


def test_apply_reproduces_a_saved_plan(tmp_path, resnet20, capsys):
    a, b, w = tmp_path / "a", tmp_path / "b", tmp_path / "w.pt"
    torch.save(resnet20.state_dict(), w)
    assert main(["prune", "resnet20", "--weights", str(w), "--method", "fpgm", "--target-flops", "0.3",
                 "--out", str(a)]) == 0
    assert main(["apply", str(a / "plan.json"), "--weights", str(w), "--out", str(b)]) == 0  # model from the plan
    x = example_input((3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(load_pruned(a)(x), load_pruned(b)(x))
    assert main(["apply", str(a / "plan.json"), "--model", "resnet56", "--out", str(tmp_path / "c")]) == 2
    assert "made for resnet20 (3x32x32), not resnet56" in capsys.readouterr().err


def _fails(argv, capsys, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    return err


def test_bad_input_gives_one_clear_message_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--method", "l1", "--out", str(out)]
    _fails(["prune", "resnet57", "--target-flops", "0.5", *base], capsys, "unknown model 'resnet57'")
    _fails(["prune", "resnet20", "--weights", str(tmp_path / "no.pt"), "--target-flops", "0.5", *base], capsys,
           "does not exist")
    other = tmp_path / "r32.pt"
    from mrp_gpu.models import create_model

    torch.save(create_model("resnet32").state_dict(), other)
    _fails(["prune", "resnet20", "--weights", str(other), "--target-flops", "0.5", *base], capsys,
           "does not fit")
    _fails(["prune", "resnet20", "--target-flops", "0.95", "--min-channels", "0.5", *base], capsys,
           "cannot be reached")
    bad_plan = tmp_path / "plan.json"
    bad_plan.write_text('{"version": 1, "model": "resnet20", "input_size": [3, 32, 32], "sizes": {"conv1": 16},'
                        ' "kept": {"conv1": [0, 99]}, "method": "l1"}')
    _fails(["apply", str(bad_plan), "--model", "resnet20", "--out", str(out)], capsys, "index 99 out of range")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "r32.pt"]  # no half-written --out


def test_existing_out_needs_force(tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(["prune", "resnet20", "--method", "l1", "--target-flops", "0.2", "--out", str(out)], capsys, "--force")
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("argv", [["--version"], ["prune", "--help"]])
def test_help_and_version(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0


def test_prune_torchvision_resnet50_and_reload(tmp_path):
    out = tmp_path / "r50"
    assert main(["prune", "resnet50", "--method", "l1", "--target-flops", "0.3", "--input-size", "3x64x64",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.30 <= summary["macs_reduction"] <= 0.33
    model = load_pruned(out)
    x = example_input((3, 64, 64))
    assert tp.utils.count_ops_and_params(model, x)[0] == summary["macs_after"]
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])


def test_every_method_writes_a_report(tmp_path):
    out = tmp_path / "l1"
    assert main(["prune", "demo", "--method", "l1", "--target-flops", "0.3", "--out", str(out), "--quiet",
                 "--plots"]) == 0
    report = (out / "report.md").read_text()
    assert "(method l1)" in report and "| MACs |" in report and "R before" not in report
    assert (out / "channels.png").stat().st_size > 500


def test_prune_mrp_demo_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["prune", "demo", "--target-flops", "0.5", "--out", str(out), "--quiet", "--plots"]) == 0
    for f in ("report.md", "redundancy.png", "channels.png", "trajectory.png"):
        assert (out / f).stat().st_size > 500, f
    report = (out / "report.md").read_text()
    assert "| MACs |" in report and "trajectory.png" in report and "R before" in report
    plan = json.loads((out / "plan.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert plan["trajectory"] and 0.50 <= summary["macs_reduction"] <= 0.53
    assert {"trace", "features", "plan", "report"} <= set(summary["stages"])  # MRP's features timed apart


def test_models_lists_the_zoo_with_the_shipped_cards(capsys):
    from mrp_gpu.models import model_card

    assert main(["models", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "resnet50" in out and "3x224x224" in out
    assert main(["models", "*demo"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "vgg_demo", "resnet56_demo", "vit_demo"):
        assert f"test accuracy {model_card(name)['test_accuracy']:.1%}" in out


def test_out_is_checked_before_any_work(tmp_path, monkeypatch, capsys):
    import mrp_gpu.api

    def no_planning(*a, **k):
        raise AssertionError("planned before checking --out")

    monkeypatch.setattr(mrp_gpu.api, "plan", no_planning)
    taken = tmp_path / "file"
    taken.write_text("x")
    assert main(["prune", "demo", "--target-flops", "0.5", "--out", str(taken)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["prune", "demo", "--target-flops", "0.5", "--out", str(full)]) == 2
    assert "pass --force" in capsys.readouterr().err and (full / "keep.txt").read_text() == "mine"


def test_ctrl_c_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import mrp_gpu.dependency.self_attention

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mrp_gpu.dependency.self_attention, "traced", interrupted)
    out = tmp_path / "d"
    assert main(["prune", "demo", "--target-flops", "0.5", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"mrp-gpu prune: interrupted; nothing was written to {out}"
    assert not out.exists()


def test_random_models_are_seeded(tmp_path):
    plans = []
    for k in range(2):
        assert main(["prune", "resnet20", "--target-flops", "0.3", "--out", str(tmp_path / str(k)), "--quiet",
                     "--no-report"]) == 0
        plans.append(json.loads((tmp_path / str(k) / "plan.json").read_text())["kept"])
    assert plans[0] == plans[1]
    summary = json.loads((tmp_path / "0" / "summary.json").read_text())
    assert summary["weights"].startswith("random init, seed 0: redundancy of random weights means nothing")


def test_refit_needs_data_and_paper_restores_the_published_reading(tmp_path, capsys):
    _fails(["prune", "demo", "--target-flops", "0.3", "--refit", "--out", str(tmp_path / "a")], capsys,
           "refit needs calibration images (--data)")
    assert main(["prune", "demo", "--target-flops", "0.3", "--paper", "--out", str(tmp_path / "p"), "--quiet",
                 "--no-report"]) == 0
    cfg = json.loads((tmp_path / "p" / "plan.json").read_text())["config"]
    assert (cfg["allocation"], cfg["cost_aware"], cfg["features"], cfg["refit"]) == ("srp", False, "weight", False)


def test_with_data_mrp_is_data_driven(tmp_path):
    from mrp_gpu.data import fashion_mnist_available

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "d"
    assert main(["prune", "demo", "--target-flops", "0.5", "--data", "fashion-mnist", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["features"] == "activation" and summary["config"]["refit"] is True
    assert summary["config"]["auto"]["refit"] == "calibration images given"
    assert summary["max_abs_diff_masked_vs_sliced"] < 1e-3
    assert summary["accuracy_after_no_retraining"] > 0.85  # refit + BN statistics: most accuracy survives
    report = (out / "report.md").read_text()
    took = float(report.split("Planning took ")[1].split(" s")[0])
    stages = summary["stages"]
    assert took == pytest.approx(stages["plan"] + stages["calibration"] + stages.get("features", 0), abs=0.011)
    assert {"data", "calibration", "refit", "bn"} <= set(stages) and f"The refit took {stages['refit']:.2f} s" in report
    assert took > 0 and "R before" not in report  # the loss allocation reads no R: the report shows what it read
    assert "MACs saved per unit loss" in report and "replace: rebuild  (auto: calibration images given)" in report


def test_print_config_resolves_every_auto_and_does_no_work(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["prune", "demo", "--target-flops", "0.5", "--data", "fashion-mnist", "--print-config",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    cfg = printed["config"]
    assert (cfg["features"], cfg["replace"], cfg["allocation"], cfg["refit"], cfg["compensate"]) == \
        ("activation", "rebuild", "loss", True, False)
    assert printed["auto"]["compensate"] == "the refit replaces the merges" and not out.exists()
    assert main(["prune", "demo", "--target-flops", "0.5", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert (cfg["features"], cfg["replace"], cfg["allocation"], cfg["refit"], cfg["compensate"]) == \
        ("weight", "error-in-community", "uniform", False, True)
    assert main(["prune", "demo", "--target-flops", "0.5", "--print-config", "--paper"]) == 0
    assert json.loads(capsys.readouterr().out)["auto"] == {}  # the paper decides everything itself


def test_models_marks_what_the_zoo_sweep_refused(capsys):
    assert main(["models", "timm/nf_resnet26"]) == 0
    out = capsys.readouterr().out
    assert "refused: NormFreeNet has no channel group mrp_gpu can prune" in out and "zoo sweeps (" in out
    assert main(["models", "resnet50"]) == 0
    assert "  pruned" in capsys.readouterr().out
    assert main(["models", "timm/ghostnet*"]) == 0  # swept timm models are listed with their status
    assert "timm/ghostnet_100" in (out := capsys.readouterr().out) and "partly pruned" in out


def test_distill_needs_data_runs_after_the_check_and_apply_repeats_it(tmp_path, capsys):
    from mrp_gpu.data import fashion_mnist_available

    _fails(["prune", "demo", "--target-flops", "0.3", "--distill", "5", "--out", str(tmp_path / "a")], capsys,
           "distill needs calibration images (--data)")
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = tmp_path / "d"
    assert main(["prune", "demo", "--target-flops", "0.3", "--data", "fashion-mnist", "--distill", "3",
                 "--distill-size", "64", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["config"]["distill"], summary["config"]["distill_size"]) == (3, 64)
    assert list(summary["stages"]).index("distill") > list(summary["stages"]).index("check")
    assert "(distilled 3 steps, no labels)" in printed and "distilled 3 steps" in (out / "report.md").read_text()
    _fails(["apply", str(out / "plan.json"), "--out", str(tmp_path / "b")], capsys,
           "was made with distillation: pass --data")
    assert main(["apply", str(out / "plan.json"), "--data", "fashion-mnist", "--out", str(tmp_path / "c")]) == 0
    again = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert "distill" in again["stages"]
    a, b = (load_pruned(p).state_dict() for p in (out, tmp_path / "c"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same plan, images and seed: the same weights


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["demo", "vit_demo"])
def test_prune_and_apply_on_cuda(tmp_path, name):
    """The commands on a CUDA model: trace, plan, slice and check where the model is, then its plan applied."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["prune", name, "--target-flops", "0.5", "--device", "cuda", "--out", str(a), "--quiet"]) == 0
    assert main(["apply", str(a / "plan.json"), "--out", str(b)]) == 0
    x = example_input(json.loads((a / "plan.json").read_text())["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(load_pruned(a)(x), load_pruned(b)(x))
