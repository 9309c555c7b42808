"""The output-reconstruction screen: its table and its merging of reruns (the steps: tests/test_distill.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pytest
from reconstruct_study import markdown, merge, parse_variants


def test_markdown_gives_each_variant_its_gain():
    r = {"date": "2026-12-03", "commands": ["python benchmarks/reconstruct_study.py"], "machine": "test",
         "runs": [{"model": "demo", "target": 0.5, "macs_reduction": 0.502, "unpruned": 93.1, "default": 92.3,
                   "variants": [{"images": 256, "steps": 400, "lr": 3e-4, "seconds": 90.0, "acc": 92.5}]}]}
    page = markdown(r)  # a row without ``bn_first``: measured with the earlier order, marked
    assert "| demo | -50.2% | 93.10 | 92.30 | 256 | 400 | 0.0003 | 92.50 * | +0.20 | 1 | 90 |" in page
    assert "earlier order" in page
    r["runs"][0]["variants"][0]["bn_first"] = True
    assert "| demo | -50.2% | 93.10 | 92.30 | 256 | 400 | 0.0003 | 92.50 | +0.20 | 1 | 90 |" in markdown(r)
    assert "earlier order" not in markdown(r)
    second = {"model": "demo", "target": 0.5, "macs_reduction": 0.502, "unpruned": 93.1, "default": 92.1,
              "variants": [{"images": 256, "steps": 400, "lr": 3e-4, "seconds": 70.0, "acc": 92.5, "bn_first": True}]}
    r["runs"].append(second)  # a second seed: means, the paired gains' spread, the median time
    assert "| demo | -50.2% | 93.10 | 92.20 | 256 | 400 | 0.0003 | 92.50 | +0.30 ± 0.14 | 2 | 80 |" in markdown(r)


def test_variants_parse_and_a_rerun_replaces_only_its_own_rows():
    assert parse_variants("images=2000,steps=400,lr=1e-3") == ({"images": 2000, "steps": 400, "lr": 1e-3},)
    with pytest.raises(SystemExit, match="must give"):
        parse_variants("images=2000,steps=400")
    row = {"model": "demo", "target": 0.5, "seed": 0, "default": 92.3}
    old = [dict(row, variants=[{"images": 256, "steps": 400, "lr": 3e-4, "acc": 92.4},
                               {"images": 2000, "steps": 400, "lr": 1e-3, "acc": 92.0}])]
    new = [dict(row, variants=[{"images": 2000, "steps": 400, "lr": 1e-3, "acc": 92.6}]),
           dict(row, target=0.7, variants=[])]
    merged = merge(old, new)
    assert [v["acc"] for v in merged[0]["variants"]] == [92.4, 92.6]
    assert [r["target"] for r in merged] == [0.5, 0.7]
    repruned = [dict(row, default=91.0, variants=[{"images": 2000, "steps": 400, "lr": 1e-3, "acc": 92.6}])]
    assert [v["acc"] for v in merge(old, repruned)[0]["variants"]] == [92.6]  # the old ones began elsewhere
