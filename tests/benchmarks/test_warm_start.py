"""The warm-start table takes each plan's accuracy from the quality study's matching rows."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality_methods import parse_method
from quality_report import summarize
from warm_start import RECAL, recal_accuracy


def _run(method, acc, seed=0):
    base, cfg = parse_method(method, seed)
    return {"model": "demo", "tag": RECAL, "target": 0.5, "base": base, "method": method,
            "config": cfg.resolved(has_data=True).to_dict(), "seed": seed, "macs_reduction": 0.5, "acc": acc}


def test_recal_accuracy_per_engine_and_allocation():
    rule = "error-in-community"  # the rule the study ran with, not today's default
    quality = {"runs": [_run(f"mrp[allocation=srp;replace={rule}]", 0.86),
                        _run(f"mrp[allocation=srp;replace={rule};backend=leiden]", 0.87),
                        _run(f"mrp[allocation=srp;replace={rule};backend=leiden]", 0.89, seed=1),
                        _run("mrp[allocation=srp;replace=reconstruction]", 0.10)]}
    quality["summary"] = summarize(quality)
    row = {"model": "demo", "allocation": "srp", "target": 0.5}
    assert recal_accuracy(quality, row, "igraph", rule) == "86.00 (n=1)"
    assert recal_accuracy(quality, row, "leiden", rule) == "88.00 ± 1.41 (n=2)"
    assert recal_accuracy(quality, row, "igraph", "reconstruction") == "10.00 (n=1)"
    assert recal_accuracy(quality, dict(row, allocation="uniform"), "leiden", rule) == "-"
    assert recal_accuracy(None, row, "igraph", rule) == "-"
