import pytest

from mrp_gpu.errors import MRPError
from mrp_gpu.io import atomic_output_dir, atomic_write_text


def test_atomic_write_replaces_whole(tmp_path):
    path = tmp_path / "a" / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary left behind


def test_output_dir_is_swapped_in_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as d:
        (d / "x").write_text("1")
    assert (out / "x").read_text() == "1"
    with pytest.raises(MRPError, match="already exists and is not empty; pass --force"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, force=True) as d:
            (d / "x").write_text("2")
            raise RuntimeError("killed half way")
    assert (out / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_output_dir(out, force=True) as d:
        (d / "y").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["y"]
