"""Property-based fuzzing of the files users hand us: every case is a clean error or a valid object."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrp_gpu.errors import MRPError, PlanError
from mrp_gpu.executor import check_plan, load_pruned, save_pruned, slice_model
from mrp_gpu.plan import PruningPlan

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=12)

FIELDS = ("version", "model", "input_size", "sizes", "kept", "method", "config", "macs_before", "macs_after",
          "params_before", "params_after", "trajectory", "notes")


@st.composite
def mutated_plans(draw, valid: dict):
    d = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "retype", "add", "kept", "sizes"]))
        if action == "drop" and d:
            d.pop(draw(st.sampled_from(sorted(d))))
        elif action == "retype":
            d[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif action == "add":
            d[draw(st.text(max_size=6))] = draw(json_values)
        elif action == "kept" and isinstance(d.get("kept"), dict):
            key = draw(st.sampled_from(sorted(d["kept"]) + ["conv1", "nope"]))
            d["kept"][key] = draw(st.lists(st.integers(-3, 70), max_size=70) | json_values)
        elif action == "sizes" and isinstance(d.get("sizes"), dict):
            key = draw(st.sampled_from(sorted(d["sizes"]) + ["extra"]))
            d["sizes"][key] = draw(st.integers(-2, 100) | json_values)
    return d


@pytest.fixture(scope="module")
def valid(resnet20, resnet20_groups):
    from mrp_gpu.api import plan

    return plan(resnet20, (3, 32, 32), target_flops=0.3, method="l1", groups=resnet20_groups)


CASES = {"plan": 0, "arch": 0}


def test_fuzz_plan_files(tmp_path_factory, resnet20, resnet20_groups, valid):
    path = tmp_path_factory.mktemp("fuzz") / "plan.json"

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(mutated_plans(valid.to_dict()), json_values,
                     st.binary(max_size=64).map(lambda b: b.decode("latin-1"))))
    def run(case):
        CASES["plan"] += 1
        path.write_text(case if isinstance(case, str) else json.dumps(case))
        try:
            p = PruningPlan.load(path)
        except PlanError:
            return
        try:
            check_plan(p, resnet20_groups)
        except PlanError:
            return
        sliced = slice_model(resnet20, p, resnet20_groups)  # a plan that passes must slice
        assert sum(1 for _ in sliced.parameters()) > 0

    run()
    assert CASES["plan"] >= 400


def test_fuzz_arch_files(tmp_path_factory, resnet20, resnet20_groups, valid):
    d = tmp_path_factory.mktemp("arch")
    save_pruned(d, slice_model(resnet20, valid, resnet20_groups), valid, {})
    good = json.loads((d / "arch.json").read_text())

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated_plans(good) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
    def run(case):
        CASES["arch"] += 1
        (d / "arch.json").write_text(case if isinstance(case, str) else json.dumps(case))
        try:
            load_pruned(d)
        except MRPError:
            pass

    run()
    assert CASES["arch"] >= 60
