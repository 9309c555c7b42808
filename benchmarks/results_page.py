"""The results index (``benchmarks/results/README.md``) and the README's two headline tables.

Everything here is read from the committed JSON of the studies; nothing is typed in by
hand, so a figure lives in one place. ``tests/benchmarks/test_results_pages.py``
regenerates every page and fails on any difference.

    python benchmarks/results_page.py    # rewrite benchmarks/results/README.md and the README's tables
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import BUDGETS, protocol_tag
from quality_report import summarize

from mrp_gpu.config import MRPConfig
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import SHIPPED

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECAL = "recal 2000 images"
CPU = BUDGETS["cpu"]
RETRAINED = (protocol_tag("finetune", CPU), protocol_tag("scratch", CPU))
DISTILLED = "mrp[distill=1000]"  # the default, then ``--distill 1000``: the drop table's second column
GOALS = [(0.5, 0.5), (0.7, 1.5)]  # (MACs target, the most a post-training drop may be: the quality goal)
CELLS = [("demo", 0.5), ("demo", 0.7), ("vgg_demo", 0.5), ("vgg_demo", 0.7)]
QUALITY_ROWS = [
    ("none", "unpruned (same protocol)"),
    ("mrp", "**mrp**, with data (defaults: `rebuild`, `allocation=loss`, refit)"),
    ("uniform[refit=1]", "uniform counts, smallest-L1 inside, the same refit (best baseline)"),
    ("l1[refit=1]", "smallest-L1 (global), the same refit"),
    ("fpgm[refit=1]", "FPGM (global), the same refit"),
    ("tp-taylor-local[refit=1]", "Torch-Pruning `GroupTaylorImportance` (per layer) + mrp's `refit`"),
    ("tp-hessian[refit=1]", "Torch-Pruning `GroupHessianImportance` (global) + mrp's `refit`"),
    ("tp-taylor", "Torch-Pruning `GroupTaylorImportance` (global), as its users run it"),
    ("tp-hessian", "Torch-Pruning `GroupHessianImportance` (global), as its users run it"),
    ("tp-magnitude", "Torch-Pruning `GroupMagnitudeImportance` (global)"),
    ("l1", "smallest-L1 (global), as usually run"),
    ("mrp[allocation=uniform;features=weight;refit=0;replace=error-in-community]", "mrp without data (defaults)"),
    ("mrp-paper", "mrp `--paper` (the published reading)"),
]
PAGES = [
    ("quality_cpu.md", "pruning quality: every method, protocol (`recal`, `finetune`, `scratch`), seed and command"),
    ("throughput_cpu.md", "CPU throughput: RMCD, full plans, per-step, scaling, latency, the CLI end to end, "
                          "the data path against Torch-Pruning's Taylor pruner"),
    ("refit_study.md", "why the refit makes a pass over the images (against a refit from the calibration pass)"),
    ("profile_resnet50_data64_after.md", "where ResNet-50's data path spends its time "
                                         "([before](profile_resnet50_data64_before.md) the one-pass refit)"),
    ("ri_study.md", "which channel of a community goes (30 % of one layer at a time); "
                    "[at 70 %](ri_study_70/ri_study.md)"),
    ("reconstruct_study.md", "a short output reconstruction after the default, without retraining (a screen)"),
    ("block_refit_study.md", "refitting each residual block's output after the layers' refit (no gain)"),
    ("threshold_sweep.md", "the edge threshold: per-layer R and the accuracy it leads to"),
    ("louvain_quality.md", "Louvain engines: modularity and time against igraph"),
    ("warm_start.md", "warm-started communities in the SRP loop"),
    ("zoo.md", "torchvision zoo sweep: pruned, partly pruned, refused, and why"),
    ("zoo_timm.md", "timm zoo sweep"),
    ("transformer_widths.md", "ViTs to -50 % MACs: stream, heads and MLP widths kept, verified"),
    ("gpu_check_cpu/gpu_check.md", "the GPU check as it runs on a CPU (CUDA parts skipped; no GPU figure yet); "
                                   "[its data-path step](gpu_check_cpu/gpu_data_path.md)"),
]


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    spread = f" ± {row['acc_std']:.2f}" if row.get("acc_std") is not None and row["n"] > 1 else ""
    return f"{row['acc_mean']:.2f}{spread}"


def quality_table(quality: dict) -> str:
    """Accuracy after pruning without retraining (BN statistics re-estimated), the headline cells."""
    rows = {(s["model"], s["target"], s["method"]): s for s in summarize(quality) if s["protocol"] == RECAL}
    none = {m: s for (m, t, name), s in rows.items() if name == "none"}
    lines = [drop_table(quality), "", "| method | " + " | ".join(f"{m} -{t:.0%} MACs" for m, t in CELLS) + " |",
             "|---|" + "---|" * len(CELLS)]
    for method, text in QUALITY_ROWS:
        cells = []
        for m, t in CELLS:
            row = none.get(m) if method == "none" else rows.get((m, t, method))
            past = row is not None and method != "none" and row["macs_reduction"] > t + 0.01
            cells.append(_cell(row) + (f" (-{row['macs_reduction']:.1%})" if past else ""))
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    seeds = max(s["n"] for s in rows.values())
    lines += ["", f"Fashion-MNIST test accuracy (%), `{RECAL}`: no retraining, BN statistics re-estimated on "
              f"2,000 training images (`distill=N`: on its {MRPConfig.distill_size:,} distillation images, before "
              "the steps); "
              f"mean ± std over up to {seeds} seeds (no ±: one run); "
              "a MACs reduction in brackets where a method went more than a point past the target. "
              f"{quality['machine']}, {quality['date']}. Every row, protocol and command: "
              "[quality_cpu.md](benchmarks/results/quality_cpu.md)."]
    return "\n".join(lines)


def drop_table(quality: dict) -> str:
    """Every shipped model without retraining: the default's drop from the unpruned model against
    the goal (at most 0.5 point at -50 % MACs, 1.5 at -70 %), the same with ``--distill 1000``
    after it, and the best other method of the cell (with its MACs reduction where it is more
    than a point off the target)."""
    rows = [s for s in summarize(quality) if s["protocol"] == RECAL]
    models = [m for m in SHIPPED if any(s["model"] == m for s in rows)]
    lines = ["| model | unpruned | " + " | ".join(f"-{t:.0%} MACs: mrp (drop) | {DISTILLED} (drop) | best other"
                                                 for t, _ in GOALS) + " |",
             "|---|---|" + "---|---|---|" * len(GOALS)]
    for m in models:
        none = next((s for s in rows if s["model"] == m and s["method"] == "none"), None)
        cells = [_cell(none)]
        for t, goal in GOALS:
            cell = [s for s in rows if s["model"] == m and s["target"] == t and s["method"] != "none"]
            others = [s for s in cell if not s["method"].startswith("mrp")]
            best = max(others, key=lambda s: s["acc_mean"], default=None)
            for mine in (next((s for s in cell if s["default"]), None),
                         next((s for s in cell if s["method"] == DISTILLED), None)):
                drop = None if mine is None or none is None else none["acc_mean"] - mine["acc_mean"]
                said = "" if drop is None else f" ({drop:.2f}, " + ("goal met)" if drop <= goal else f"goal {goal})")
                cells.append("-" if mine is None else f"{_cell(mine)} (n={mine['n']}){said}")
            cells.append(_named(best, t))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _named(row: dict | None, target: float) -> str:
    """A cell of another method: its accuracy, name and MACs reduction where more than a point off."""
    if row is None:
        return "-"
    off = abs(row["macs_reduction"] - target) > 0.01
    return f"{_cell(row)} (n={row['n']}) `{row['method']}`" + (f" (at -{row['macs_reduction']:.1%})" if off else "")


def retrained_table(quality: dict) -> str:
    """After retraining (``finetune`` from the pruned weights, ``scratch`` from the pruned counts):
    the default against the best Torch-Pruning criterion (alone or with the refit) and the best
    other method of each cell."""
    rows = [s for s in summarize(quality) if s["protocol"] in RETRAINED]
    lines = ["| model | protocol | unpruned | " + " | ".join(
        f"-{t:.0%} MACs: mrp | best Torch-Pruning | best other" for t, _ in GOALS) + " |",
             "|---|---|---|" + "---|---|---|" * len(GOALS)]
    for m in SHIPPED:
        for tag in RETRAINED:
            here = [s for s in rows if s["model"] == m and s["protocol"] == tag]
            if not any(s["default"] for s in here):
                continue
            none = next((s for s in here if s["method"] == "none"), None)
            cells = [_cell(none)]
            for t, _ in GOALS:
                cell = [s for s in here if s["target"] == t and s["method"] != "none"]
                mine = next((s for s in cell if s["default"]), None)
                tp = [s for s in cell if s["method"].startswith("tp-")]
                others = [s for s in cell if not s["method"].startswith(("mrp", "tp-"))]
                cells += ["-" if mine is None else f"{_cell(mine)} (n={mine['n']})",
                          _named(max(tp, key=lambda s: s["acc_mean"], default=None), t),
                          _named(max(others, key=lambda s: s["acc_mean"], default=None), t)]
            lines.append(f"| {m} | {tag.split(' ')[0]} | " + " | ".join(cells) + " |")
    lines += ["", f"Fashion-MNIST test accuracy (%), mean ± std over n seeds. `{RETRAINED[0]}`: SGD from the "
              f"pruned weights at lr {CPU['lr']}; `{RETRAINED[1]}`: the pruned architecture re-initialised and "
              f"trained at lr {CPU['scratch_lr']} (the unpruned column: the unpruned architecture trained with the "
              "same budget). "
              f"{quality['machine']}, {quality['date']}. Every row and command: [quality_cpu.md](quality_cpu.md)."]
    return "\n".join(lines)


def data_path_rows(section: dict | None) -> list[tuple[str, str, str]]:
    """resnet50's data path (calibration pass, plan, refit, BN) against Torch-Pruning's Taylor pruner."""
    rows, runs = [], (section or {}).get("rows", {})
    for n in (256, 64):
        mrp, taylor = runs.get(f"resnet50|{n}|mrp"), runs.get(f"resnet50|{n}|tp-taylor")
        if mrp and taylor:
            rows.append((f"resnet50 to -50 % MACs with {n} calibration images, one process each (MRP's data "
                         "defaults: calibration pass, plan, refit, BN; Torch-Pruning: `GroupTaylorImportance`)",
                         f"{mrp['process_seconds']:.0f} s", f"{taylor['process_seconds']:.0f} s "
                         f"({mrp['process_seconds'] / taylor['process_seconds']:.2f}x)"))
    return rows


def performance_table(tp: dict) -> str:
    """The CPU figures a user feels: the CLI end to end, the plans, RMCD, the SRP step, inference."""
    plans = tp["plans"]
    default = next(v for k, v in plans.items() if k.startswith("mrp_gpu (defaults:"))
    magnitude = next(v for k, v in plans.items() if k.startswith("torch-pruning"))
    knn = tp["rmcd"]["resnet50|knn16|numba"]
    naive = tp["naive"]["resnet56"]
    speed = tp["latency"]["speedup"]
    rows = []
    if "end_to_end" in tp:
        e = tp["end_to_end"]
        rows.append(("`mrp-gpu prune resnet50 --target-flops 0.5`, end to end (start-up included)",
                     f"{e['median']['cli']:.1f} s", f"{e['median']['tp']:.1f} s ({e['ratio_cli_to_tp']:.2f}x)"))
    rows.append(("MRP plan of resnet50 to -50 % MACs, without data (trace included)", f"{default['seconds']:.2f} s",
                 f"{magnitude['seconds']:.2f} s ({tp['plan_ratio_default_to_tp']:.2f}x)"))
    rows += data_path_rows(tp.get("data_path"))
    rows += [
             ("RMCD of resnet50 (26,560 filters, kNN k=16 graphs, `numba` Louvain)",
              f"{knn['rmcd'] * 1e3:.0f} ms", ""),
             ("one SRP step of resnet56, against a naive reference", f"{naive['mrp_gpu_step_ms_mean']:.2f} ms",
              f"{naive['naive_step_ms_median']:.1f} ms ({naive['per_step_speedup']:.0f}x faster)"),
             ("resnet50 at -50 % MACs: inference speed-up, batch 64 / 1",
              f"{speed['mrp@64']:.2f}x / {speed['mrp@1']:.2f}x", "")]
    lines = ["| what | mrp_gpu | Torch-Pruning, same run |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    dated = f" (the data path: {tp['data_path']['date']})" if "data_path" in tp else ""
    lines += ["", f"{tp['machine']}, {tp['date']}{dated}, random weights; Torch-Pruning: `MetaPruner` + "
              "`GroupMagnitudeImportance` to the same MACs unless said (end to end: `benchmarks/tp_prune.py`). "
              "Every figure and command: [throughput_cpu.md](benchmarks/results/throughput_cpu.md)."]
    return "\n".join(lines)


def zoo_line(zoo: dict) -> str:
    counts = {}
    for r in zoo["models"]:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in ("pruned", "partly pruned", "refused", "error"))


def index_page() -> str:
    quality, tp = _load("quality_cpu.json"), _load("throughput_cpu.json")
    relink = {"](benchmarks/results/": "]("}  # the tables link from the repository root; this page sits beside them

    def local(text: str) -> str:
        for a, b in relink.items():
            text = text.replace(a, b)
        return text

    lines = ["# Results", "", "Generated by `python benchmarks/results_page.py` from the committed JSON beside "
             "this page; each study's own page is written by the script that ran it, and gives its command.", "",
             "| page | what |", "|---|---|"]
    lines += [f"| [{p}]({p}) | {what} |" for p, what in PAGES]
    lines += ["", "## Quality", "", local(quality_table(quality)), "", "### After retraining", "",
              retrained_table(quality), "", "## Performance (CPU)", "",
              local(performance_table(tp)), "", "## Model zoo", "",
              f"- torchvision ({len(_load('zoo.json')['models'])} classifiers): {zoo_line(_load('zoo.json'))}.",
              f"- timm ({len(_load('zoo_timm.json')['models'])} architectures): {zoo_line(_load('zoo_timm.json'))}.",
              ""]
    return "\n".join(lines)


def readme_with_tables(readme: str) -> str:
    """``readme`` with the blocks between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` regenerated."""
    tables = {"quality": quality_table(_load("quality_cpu.json")),
              "performance": performance_table(_load("throughput_cpu.json"))}
    for name, table in tables.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- results:{name} --> block")
        readme = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), readme)
    return readme


def main() -> int:
    atomic_write_text(RESULTS / "README.md", index_page())
    readme = ROOT / "README.md"
    atomic_write_text(readme, readme_with_tables(readme.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
