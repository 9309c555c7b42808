"""Every committed results page is what its script writes from the committed JSON beside it."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import data_path  # noqa: E402
import gpu_bench  # noqa: E402
import louvain_quality  # noqa: E402
import quality_methods  # noqa: E402
import quality_report  # noqa: E402
import refit_study  # noqa: E402
import results_page  # noqa: E402
import ri_study  # noqa: E402
import threshold_sweep  # noqa: E402
import throughput  # noqa: E402
import transformer_widths  # noqa: E402
import warm_start  # noqa: E402
import zoo_sweep  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAGES = [  # (page, JSON, how the script renders it)
    ("quality_cpu.md", "quality_cpu.json", quality_report.markdown),
    ("throughput_cpu.md", "throughput_cpu.json", throughput.markdown),
    ("louvain_quality.md", "louvain_quality.json", louvain_quality.markdown),
    ("ri_study.md", "ri_study.json", ri_study.markdown),
    ("ri_study_70/ri_study.md", "ri_study_70/ri_study.json", ri_study.markdown),
    ("threshold_sweep.md", "threshold_sweep.json", threshold_sweep.markdown),
    ("zoo.md", "zoo.json", zoo_sweep.markdown),
    ("zoo_timm.md", "zoo_timm.json", zoo_sweep.markdown),
    ("gpu_check_cpu/gpu_check.md", "gpu_check_cpu/gpu_check.json", gpu_bench.markdown),
    ("gpu_check_cpu/gpu_data_path.md", "gpu_check_cpu/gpu_data_path.json", data_path.gpu_markdown),
    ("refit_study.md", "refit_study.json", refit_study.markdown),
    ("transformer_widths.md", "transformer_widths.json", transformer_widths.markdown),
    ("warm_start.md", "warm_start.json", lambda r: warm_start.markdown(r, warm_start.read_quality(RESULTS))),
]


@pytest.mark.parametrize("page,source,render", PAGES, ids=[p for p, _, _ in PAGES])
def test_a_study_page_is_its_json_rendered(page, source, render):
    expected = render(json.loads((RESULTS / source).read_text()))
    assert (RESULTS / page).read_text().rstrip("\n") == expected.rstrip("\n"), \
        f"{page} differs from what its script writes from {source}: rerun the script (or its --replot)"


def test_the_results_index_and_the_readme_tables_are_generated():
    assert (RESULTS / "README.md").read_text() == results_page.index_page()
    readme = (ROOT / "README.md").read_text()
    assert readme == results_page.readme_with_tables(readme), "run python benchmarks/results_page.py"
    assert "| **mrp**, with data" in readme and "end to end" in readme


def test_the_headline_quality_row_is_the_summary_of_the_default_runs():
    rows = quality_report.summarize(json.loads((RESULTS / "quality_cpu.json").read_text()))
    default = next(r for r in rows if r["method"] == "mrp" and r["protocol"] == results_page.RECAL
                   and (r["model"], r["target"]) == ("demo", 0.5))
    assert default["default"] and f"| {default['acc_mean']:.2f} ± {default['acc_std']:.2f} |" in \
        results_page.quality_table(json.loads((RESULTS / "quality_cpu.json").read_text()))


def _run(model, method, target, acc, reduction=None, tag=results_page.RECAL, seed=0):
    base, cfg = ("none", {}) if method == "none" else quality_methods._base_config(method)
    return {"model": model, "tag": tag, "target": target, "base": base, "method": method, "config": cfg,
            "seed": seed, "acc": acc, "macs_reduction": target if reduction is None else reduction}


def test_the_drop_table_gives_each_shipped_model_the_defaults_drop_against_the_goal():
    quality = {"runs": [_run("demo", "none", 0.5, 0.93), _run("demo", "mrp", 0.5, 0.926),
                        _run("demo", "mrp", 0.7, 0.91),
                        _run("demo", "l1[refit=1]", 0.5, 0.92), _run("demo", "l1[refit=1]", 0.7, 0.89, 0.56),
                        _run("demo", "mrp[distill=1000]", 0.7, 0.92)]}
    table = results_page.drop_table(quality)
    assert "| demo | 93.00 | 92.60 (n=1) (0.40, goal met) | - | 92.00 (n=1) `l1[refit=1]` |" in table
    assert ("91.00 (n=1) (2.00, goal 1.5) | 92.00 (n=1) (1.00, goal met) | "
            "89.00 (n=1) `l1[refit=1]` (at -56.0%) |") in table
    assert "vgg_demo" not in table  # a model without runs has no row


def test_the_retrained_table_sets_the_default_against_the_best_torch_pruning_criterion_and_the_best_other():
    finetune, scratch = results_page.RETRAINED
    runs = [_run("demo", "none", 0.5, 0.93, tag=finetune), _run("demo", "mrp", 0.5, 0.925, tag=finetune),
            _run("demo", "mrp", 0.5, 0.927, tag=finetune, seed=1), _run("demo", "tp-taylor", 0.5, 0.90, tag=finetune),
            _run("demo", "tp-hessian[refit=1]", 0.5, 0.92, 0.53, tag=finetune),
            _run("demo", "fpgm", 0.5, 0.91, tag=finetune),
            _run("demo", "mrp[allocation=srp]", 0.5, 0.95, tag=finetune),  # an MRP variant: not a peer
            _run("demo", "mrp", 0.7, 0.86, tag=scratch), _run("demo", "l1", 0.7, 0.87, tag=scratch),
            _run("vgg_demo", "l1", 0.5, 0.90, tag=scratch)]  # no default run: no row
    table = results_page.retrained_table({"runs": runs, "machine": "m", "date": "d"})
    assert ("| demo | finetune | 93.00 | 92.60 ± 0.14 (n=2) | 92.00 (n=1) `tp-hessian[refit=1]` (at -53.0%) | "
            "91.00 (n=1) `fpgm` | - | - | - |") in table
    assert "| demo | scratch | - | - | - | - | 86.00 (n=1) | - | 87.00 (n=1) `l1` |" in table
    assert "vgg_demo" not in table
