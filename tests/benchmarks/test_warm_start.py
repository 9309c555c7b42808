"""The warm-start table takes each plan's accuracy from the quality study's matching rows."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality import parse_method, summarize
from warm_start import RECAL, recal_accuracy


def _run(method, acc, seed=0):
    base, cfg = parse_method(method, seed)
    return {"model": "demo", "tag": RECAL, "target": 0.5, "base": base, "method": method,
            "config": cfg.resolved(has_data=True).to_dict(), "seed": seed, "macs_reduction": 0.5, "acc": acc}


def test_recal_accuracy_per_engine_and_allocation():
    quality = {"runs": [_run("mrp[allocation=srp]", 0.86), _run("mrp[allocation=srp;backend=leiden]", 0.87),
                        _run("mrp[allocation=srp;backend=leiden]", 0.89, seed=1)]}
    quality["summary"] = summarize(quality)
    row = {"model": "demo", "allocation": "srp", "target": 0.5}
    assert recal_accuracy(quality, row, "igraph") == "86.00 (n=1)"
    assert recal_accuracy(quality, row, "leiden") == "88.00 ± 1.41 (n=2)"
    assert recal_accuracy(quality, dict(row, allocation="uniform"), "leiden") == "-"
    assert recal_accuracy(None, row, "igraph") == "-"
