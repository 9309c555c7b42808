"""The quality study's bookkeeping: method names, labels, resumable results, gaps."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality import _split_methods, label, markdown, missing, parse_method, summarize

from mrp_gpu.config import PAPER, MRPConfig


def test_methods_split_outside_brackets_and_parse():
    assert _split_methods("mrp[a=1;b=2],l1,uniform+mrp[refit=1]") == ["mrp[a=1;b=2]", "l1", "uniform+mrp[refit=1]"]
    base, cfg = parse_method("mrp[chance_degree=0.001;refit=0;tau=None]", seed=2)
    assert base == "mrp" and cfg.chance_degree == 0.001 and cfg.refit is False and cfg.tau is None and cfg.seed == 2
    assert parse_method("mrp-paper", 0)[1].allocation == PAPER["allocation"]
    assert parse_method("mrp-alloc+l1", 0)[1].allocation == "srp"
    assert parse_method("l1", 0)[1].refit is False  # baselines: no refit unless asked
    with pytest.raises(SystemExit, match="unknown MRPConfig field"):
        parse_method("mrp[nope=1]", 0)
    with pytest.raises(SystemExit, match="unknown method"):
        parse_method("magic", 0)


def test_labels_follow_the_defaults_of_the_day():
    default = MRPConfig(seed=1).resolved(has_data=True).to_dict()
    assert label("mrp", default) == "mrp"
    old = dict(default, allocation="srp", features="weight", refit=False, compensate=True)
    assert label("mrp", old) == "mrp[allocation=srp;features=weight;refit=0]"  # compensate: auto without refit
    assert label("mrp", dict(old, compensate=False)) == "mrp[allocation=srp;compensate=0;features=weight;refit=0]"
    assert label("mrp", dict(default, compensate=True)) == "mrp"  # the refit replaced the merges: no difference
    retired = dict(old, version=1, floor_communities=True, bn_scale=False)  # a row of a field that left
    assert label("mrp", retired) == "mrp[allocation=srp;features=weight;floor_communities=1;refit=0]"
    assert label("l1", dict(default, refit=True)) == "l1[refit=1]"
    assert label("l1", dict(default, refit=False, chance_degree=9.0)) == "l1"  # MRP's options mean nothing to L1
    assert label("uniform", dict(default, refit=True, calib_size=512)) == "uniform[calib_size=512;refit=1]"


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
