"""The widths study reads what a verified ViT prune keeps: stream, whole heads, MLPs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from transformer_widths import markdown, run


def test_vit_demo_widths_are_read_from_the_checked_plan():
    r = run("vit_demo", "l1", 0.5)
    w = r["widths"]
    assert r["macs_reduction"] >= 0.5 and r["kinds"] == {"linear": 4, "stream": 1, "heads": 4}
    assert w["head_dim"] == 16 and w["embed_dim"][0] == 64 > w["embed_dim"][1]
    assert len(w["heads"]) == 4 and all(after <= before == 4 for before, after in w["heads"].values())
    assert any(after < 4 for _, after in w["heads"].values())
    assert len(w["mlp"]) == 4 and all(after < before == 256 for before, after in w["mlp"].values())
    page = markdown({"date": "d", "machine": "m", "command": "c", "runs": [r]})
    assert f"64 -> {w['embed_dim'][1]}" in page and "| vit_demo | l1 |" in page
