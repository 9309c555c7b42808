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


KILLED_RUN = r"""
import sys, time
from pathlib import Path
from mrp_gpu.io import atomic_output_dir, atomic_write_text
out, marker = Path(sys.argv[1]), Path(sys.argv[2])
with atomic_output_dir(out, force=True) as d:
    atomic_write_text(d / "plan.json", "new half")
    marker.write_text("writing")
    time.sleep(60)  # killed here, mid-write
    atomic_write_text(d / "model.safetensors", "new")
"""


def test_a_run_killed_mid_write_leaves_the_previous_outputs(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    with atomic_output_dir(out) as d:
        (d / "plan.json").write_text("old plan")
        (d / "model.safetensors").write_text("old weights")
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out), str(marker)])
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child never started writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (out / "plan.json").read_text() == "old plan"
    assert (out / "model.safetensors").read_text() == "old weights"
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(leftovers) == 1  # the dead run's scratch directory...
    with atomic_output_dir(out, force=True) as d:
        (d / "plan.json").write_text("next")
    assert not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())  # ...is cleaned by the next run
    assert (out / "plan.json").read_text() == "next"
