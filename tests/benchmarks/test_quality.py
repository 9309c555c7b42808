"""The quality study's command line: the method list splits outside brackets."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from quality import _split_methods


def test_methods_split_outside_brackets():
    assert _split_methods("mrp[a=1;b=2],l1,uniform+mrp[refit=1]") == ["mrp[a=1;b=2]", "l1", "uniform+mrp[refit=1]"]
