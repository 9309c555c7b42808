import json

import pytest

from mrp_gpu.errors import PlanError
from mrp_gpu.plan import PruningPlan


def _plan(**kw):
    base = dict(model="m", input_size=(3, 8, 8), sizes={"a": 4, "b": 2}, kept={"a": (0, 2)}, method="l1")
    return PruningPlan(**(base | kw))


def test_round_trip(tmp_path):
    p = _plan(trajectory=[{"step": 0, "group": "a"}], macs_before=10, macs_after=5)
    p.save(tmp_path / "plan.json")
    q = PruningPlan.load(tmp_path / "plan.json")
    assert q == p
    assert q.kept_count("a") == 2 and q.kept_count("b") == 2
    assert q.removed("a").tolist() == [1, 3]
    assert q.macs_reduction == 0.5


@pytest.mark.parametrize("kw,message", [
    ({"kept": {"c": (0,)}}, r"kept\['c'\]: unknown group"),
    ({"kept": {"a": (0, 4)}}, r"kept\['a'\]: index 4 out of range \[0, 4\)"),
    ({"kept": {"a": (1, 1)}}, r"kept\['a'\]: duplicate index \[1\]"),
    ({"kept": {"a": ()}}, r"kept\['a'\]: empty group"),
    ({"kept": {"a": ("0",)}}, r"kept\['a'\]: expected an integer"),
    ({"sizes": {"a": 0}}, r"sizes\['a'\]: must be >= 1"),
    ({"input_size": (3, -1)}, "input_size"),
    ({"macs_after": -3}, "macs_after: must be >= 0"),
])
def test_validation_names_the_field(kw, message):
    with pytest.raises(PlanError, match=message):
        _plan(**kw)


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"version": 99}', "not a plan written by mrp-gpu: it has no model, input_size, sizes, kept, method"),
    ('{"groups": {}}', "not a plan written by mrp-gpu"),
    ('{"version": 99, "model": "m", "input_size": [1, 2, 2], "sizes": {}, "kept": {}, "method": "l1"}',
     "version: expected 1"),
    ('{"version": 1, "model": "m", "input_size": [1, 2, 2], "sizes": {}, "kept": {}}', "missing field"),
])
def test_malformed_files(tmp_path, text, message):
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanError, match=message):
        PruningPlan.load(path)


def test_unknown_fields_and_missing_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_plan().to_dict() | {"extra": 1}))
    with pytest.raises(PlanError, match="unknown field"):
        PruningPlan.load(path)
    with pytest.raises(PlanError, match="does not exist"):
        PruningPlan.load(tmp_path / "nope.json")
