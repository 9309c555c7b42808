"""The quality study's methods: names parsed into configs, labels that follow the defaults."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality_methods import label, parse_method

from mrp_gpu.config import PAPER, MRPConfig


def test_methods_parse_into_configs():
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
