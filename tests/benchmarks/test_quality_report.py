"""The quality study's results: summaries, the markdown table, what the grids still miss."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality_methods import parse_method
from quality_report import markdown, missing, summarize


def _run(method, seed, acc, target=0.5, tag="recal 2000 images"):
    base, cfg = parse_method(method, seed)
    return {"model": "demo", "tag": tag, "target": target, "base": base, "method": method,
            "config": cfg.resolved(has_data=True).to_dict(), "seed": seed, "macs_reduction": target + 0.002,
            "acc": acc}


def test_summary_markdown_and_what_is_missing():
    runs = [_run("mrp", 0, 0.90), _run("mrp", 1, 0.92), _run("l1[refit=1]", 0, 0.91)]
    result = {"runs": runs, "commands": ["python benchmarks/quality.py ..."], "date": "2026-11-29",
              "machine": "test", "data": "fashion-mnist",
              "grids": [{"models": ["demo"], "tags": ["recal 2000 images"], "targets": [0.5],
                         "methods": ["mrp", "l1[refit=1]"], "seeds": 2}]}
    rows = {r["method"]: r for r in summarize(result)}
    assert rows["mrp"]["n"] == 2 and rows["mrp"]["default"] and abs(rows["mrp"]["acc_mean"] - 91.0) < 1e-9
    assert not rows["l1[refit=1]"]["default"]
    assert missing(result) == ["demo, recal 2000 images, -50%, l1[refit=1]: 1 of 2 seeds"]
    text = markdown(result)
    assert "| **mrp** | 91.00 ± 1.41 (n=2) |" in text and "l1[refit=1]: 1 of 2 seeds" in text


def test_a_grid_keeps_the_configs_its_methods_had_when_requested():
    # "mrp" asked for when another rule was the default was run with that rule: its runs are
    # labelled by the difference now, and the grid's pinned label finds them
    old = parse_method("mrp[allocation=uniform;replace=reconstruction]", 0)
    run = dict(_run("mrp", 0, 0.9), config=old[1].resolved(has_data=True).to_dict())
    grid = {"models": ["demo"], "tags": ["recal 2000 images"], "targets": [0.5], "methods": ["mrp"], "seeds": 1}
    result = {"runs": [run], "grids": [grid]}
    assert missing(result) == ["demo, recal 2000 images, -50%, mrp: 0 of 1 seeds"]  # unpinned: today's meaning
    grid["pins"] = {"mrp": ["mrp", old[1].resolved(has_data=True).to_dict()]}
    assert missing(result) == []
    result["runs"] = []  # a gap is named by the pinned config, labelled by today's defaults
    gap = "demo, recal 2000 images, -50%, mrp[allocation=uniform;replace=reconstruction]: 0 of 1 seeds"
    assert missing(result) == [gap]
