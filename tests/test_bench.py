import json

from mrp_gpu.bench import bench_latency, bench_plan, bench_rmcd, latency_speedups
from mrp_gpu.cli import main
from mrp_gpu.config import MRPConfig
from mrp_gpu.models import create_model


def test_rmcd_and_plan_timings(resnet20):
    row = bench_rmcd(resnet20, (3, 32, 32), MRPConfig(k_max=16, tau=-1.0), repeat=2)
    assert row["rmcd"] > 0 and row["repeat"] == 2
    stages = sum(row[s] for s in ("features", "similarity", "louvain", "redundancy"))
    assert abs(row["rmcd"] - stages) < 0.5 * row["rmcd"]  # medians of sums vs sums of medians: close
    assert row["filters"] >= row["channels"] > 0 and row["edges"] > 0  # kNN graphs always have edges
    p = bench_plan(create_model("demo"), (1, 28, 28), MRPConfig(), target_flops=0.3)
    assert p["steps"] > 0 and p["macs_reduction"] >= 0.3


def test_latency_rows_and_speedups(resnet20):
    rows = bench_latency({"a": resnet20, "b": create_model("resnet20")}, (3, 32, 32), batches=(1, 4), repeat=2,
                         warmup=1)
    assert {(r["model"], r["batch"], r["format"]) for r in rows} == {
        (m, b, f) for m in "ab" for b in (1, 4) for f in ("contiguous", "channels_last")}
    assert set(latency_speedups(rows, "a")) == {"b@1", "b@4"}


def test_bench_cli(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--models", "demo", "--repeat", "1", "--plan", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["models"]["demo"]["steps"] > 0
    pruned = tmp_path / "p"
    assert main(["prune", "demo", "--target-flops", "0.3", "--out", str(pruned), "--quiet", "--no-report",
                 "--measure-latency"]) == 0
    assert "latency_speedup" in json.loads((pruned / "summary.json").read_text())
    assert main(["bench", "--latency", str(pruned), "--batches", "1", "--repeat", "2"]) == 0
    assert "speed-up" in capsys.readouterr().out
