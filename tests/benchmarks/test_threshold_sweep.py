"""The threshold sweep reads the quality study's rows under the names the study gives them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality_methods import _base_config
from quality_report import find, summarize
from threshold_sweep import accuracies, markdown


def _run(method, acc, target=0.5, tag="recal 2000 images", seed=0):
    """A committed-style row (some name an allocation the product no longer has: log-r)."""
    base, config = _base_config(method)
    return {"model": "demo", "tag": tag, "target": target, "base": base, "method": method,
            "config": config | {"seed": seed}, "seed": seed, "macs_reduction": target, "acc": acc}


def test_find_names_a_method_as_the_study_labels_it():
    quality = {"runs": [_run("mrp", 0.9), _run("mrp[allocation=log-r;chance_degree=0.0001]", 0.8)]}
    quality["summary"] = summarize(quality)
    tag = "recal 2000 images"
    assert find(quality, "demo", tag, 0.5, "mrp[chance_degree=0.05;allocation=loss]")["method"] == "mrp"
    row = find(quality, "demo", tag, 0.5, "mrp[chance_degree=0.0001;allocation=log-r]")
    assert row["method"] == "mrp[allocation=log-r;chance_degree=0.0001]" and row["acc_mean"] == 80.0
    assert find(quality, "demo", tag, 0.7, "mrp") is None and find(quality, "demo", tag, 0.5, "l1") is None


def test_accuracies_pick_the_rows_of_one_protocol_and_the_best_baseline():
    u = "allocation=uniform;replace=error-in-community"  # the rows the committed sweep read
    runs = [_run(f"mrp[{u}]", 0.90), _run(f"mrp[{u}]", 0.92, seed=1), _run(f"mrp[{u};tau=0.5]", 0.91),
            _run("mrp[allocation=log-r;replace=error-in-community;tau=0.5]", 0.80),
            _run(f"mrp[{u};tau=0.5]", 0.99, tag="recal 2000 images, test 500"), _run("mrp[tau=0.5]", 0.97),
            _run("l1", 0.85), _run("uniform[refit=1]", 0.93)]
    quality = {"runs": runs}
    quality["summary"] = summarize(quality)
    thresholds = ["chance_degree=0.05", "tau=0.5", "tau=0.7"]
    acc = accuracies(quality, "demo", thresholds, "recal 2000 images")
    assert acc["uniform"]["0.5"]["chance_degree=0.05"]["n"] == 2
    assert abs(acc["uniform"]["0.5"]["tau=0.5"]["acc_mean"] - 91.0) < 1e-9  # the screen's 99 % is not read
    assert acc["log-r"]["0.5"]["tau=0.5"]["acc_mean"] == 80.0 and acc["uniform"]["0.5"]["tau=0.7"] is None
    assert acc["best baseline"]["0.5"]["method"] == "uniform[refit=1]"
    R = {"weight": {t: {"conv1": 1.0, "fc": 2.0} for t in thresholds},
         "activation": {t: {"conv1": 3.0, "fc": 5.0} for t in thresholds}}
    text = markdown({"date": "2026-11-29", "machine": "test", "command": "python ...", "calib_size": 256,
                     "tag": "recal 2000 images", "quality": "quality_cpu.json", "thresholds": thresholds,
                     "models": {"demo": {"R": R, "accuracy": acc}}})
    assert "| tau=0.5 | 4.00 | 5.00 | 1.50 | 91.00 (n=1) | 80.00 (n=1) | - |" in text
    assert "-50%: uniform[refit=1] 93.00 (n=1)" in text
