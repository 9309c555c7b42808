"""The edge threshold: the per-layer redundancy each one gives, next to the accuracy it leads to.

For each shipped model and each threshold of ``--thresholds`` (an ``MRPConfig`` field:
``chance_degree``, the expected chance neighbours per channel, or an absolute cosine
``tau``), this script computes every group's ``R`` on the unpruned model, with the
features the default uses with data (activations of a calibration batch of training
images) and without (the filters' weights). The accuracy each threshold leads to comes
from the quality study (``benchmarks/quality.py``, ``recal`` protocol): the rows
``mrp[<threshold>]`` and ``mrp[allocation=<a>;<threshold>]`` of its results file, mean over
the seeds run. Run the study first, e.g.::

    python benchmarks/quality.py --protocols recal --seeds 1 \\
        --methods "mrp,mrp[chance_degree=0.001],mrp[allocation=srp;tau=0.5],..."

then::

    python benchmarks/threshold_sweep.py --out benchmarks/results

An absolute ``tau`` reads as a replaceability tolerance: a channel whose feature has
cosine ``c`` with a partner's is rebuilt from that partner alone, by least squares, up to
a share ``1 - c^2`` of its energy, so ``tau = sqrt(1 - t)`` joins the channels that one
partner replaces within a tolerance ``t`` (``tau = 0.7``: half the energy; ``0.9``: 19 %).

Writes ``threshold_sweep.json``, ``threshold_sweep.md`` and ``threshold_sweep.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
from quality_report import find, fmt
from ri_study import THRESHOLDS, redundancy_by_threshold

from mrp_gpu.config import MRPConfig
from mrp_gpu.data import calibration_batch
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.io import atomic_write_bytes, atomic_write_text
from mrp_gpu.models import create_model, default_input_size

ALLOCATIONS = ("uniform", "log-r", "srp")  # log-r: committed rows only (the allocation left the product)
SWEPT_RULE = "error-in-community"  # the in-layer rule the committed sweep ran with (the default of its day)


def redundancy(model_name: str, thresholds: list[str], calib_size: int, data: str, root) -> dict:
    """``{features: {threshold: {group: R}}}`` of the unpruned model."""
    model = create_model(model_name)
    size = default_input_size(model_name, 1 if data == "fashion-mnist" else None)
    images = calibration_batch(data, size, n=calib_size, root=root)
    return redundancy_by_threshold(model, size, build_groups(model, size), thresholds, images)


def accuracies(quality: dict, model: str, thresholds: list[str], tag: str, replace: str = SWEPT_RULE) -> dict:
    """``{allocation: {target: {threshold: summary row or None}}}`` from the quality study's recal
    rows of the ``replace`` rule, and under ``"best baseline"`` the best non-MRP row of each target."""
    rows = [s for s in quality["summary"] if s["model"] == model and s["protocol"] == tag and s["target"] is not None]
    targets = sorted({s["target"] for s in rows})
    out = {a: {str(x): {t: find(quality, model, tag, x, f"mrp[{t};allocation={a};replace={replace}]")
                        for t in thresholds}
               for x in targets}
           for a in ALLOCATIONS}
    baselines = {x: [s for s in rows if s["target"] == x and not s["method"].startswith(("mrp", "none"))]
                 for x in targets}
    out["best baseline"] = {str(x): max(b, key=lambda s: s["acc_mean"]) if b else None for x, b in baselines.items()}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.8 * len(models)), squeeze=False)
    thresholds = result["thresholds"]
    colors = {t: plt.cm.viridis(i / max(len(thresholds) - 1, 1)) for i, t in enumerate(thresholds)}
    for (left, right), (name, d) in zip(axes, models.items()):
        for t in thresholds:
            by_group = d["R"]["activation"][t]
            left.plot(range(len(by_group)), list(by_group.values()), marker="o", ms=3, color=colors[t], label=t)
        groups = list(d["R"]["activation"][thresholds[0]])
        left.set_xticks(range(len(groups)), groups, rotation=90, fontsize=6)
        left.set_yscale("log")
        left.set_ylabel("R (activation features)")
        left.set_title(f"{name}: per-layer R, unpruned")
        left.legend(fontsize=6)
        for a, color in zip(ALLOCATIONS, ("C0", "C2", "C3")):
            for target, (style, marker) in zip(sorted(d["accuracy"][a]), (("-", "o"), ("--", "s"), (":", "^"))):
                cells = d["accuracy"][a][target]
                xs = [i for i, t in enumerate(thresholds) if cells[t]]
                if not xs:
                    continue
                ys = [cells[thresholds[i]]["acc_mean"] for i in xs]
                right.plot(xs, ys, ls=style, marker=marker, ms=4, color=color, label=f"{a}, -{float(target):.0%}")
        bests = [b for b in d["accuracy"]["best baseline"].values() if b is not None]
        for target, best in d["accuracy"]["best baseline"].items():
            if best is not None:
                right.axhline(best["acc_mean"], color="grey", lw=0.8, ls="-.")
                right.annotate(f"best baseline -{float(target):.0%}: {best['method']}", (0, best["acc_mean"]),
                               fontsize=6, color="grey", va="bottom")
        if bests:  # the close calls are what matters: collapsed plans fall off the axis (see the table)
            right.set_ylim(min(b["acc_mean"] for b in bests) - 5, max(b["acc_mean"] for b in bests) + 1)
        right.set_xticks(range(len(thresholds)), thresholds, rotation=30, fontsize=7)
        right.set_ylabel("recal accuracy (%)")
        right.set_title(f"{name}: recal accuracy (lower points off the axis: see the table)", fontsize=9)
        right.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def markdown(result: dict) -> str:
    thresholds = result["thresholds"]
    lines = ["# Edge threshold sweep", "",
             f"{result['date']}, {result['machine']}; `{result['command']}`. R: the unpruned model, "
             f"{result['calib_size']} training images for activation features. Accuracy: the quality study's "
             f"`{result['tag']}` rows (`{Path(result['quality']).name}`), mean ± std over the seeds run (n); "
             "- : not run.", "",
             "![threshold sweep](threshold_sweep.png)", ""]
    for name, d in result["models"].items():
        lines += [f"## {name}", "", "| threshold | mean R (activation) | max R (activation) | mean R (weight) | "
                  + " | ".join(f"{a}, -{float(x):.0%}" for a in ALLOCATIONS for x in sorted(d["accuracy"][a])) + " |",
                  "|---|---|---|---|" + "---|" * sum(len(d["accuracy"][a]) for a in ALLOCATIONS)]
        for t in thresholds:
            act, wt = list(d["R"]["activation"][t].values()), list(d["R"]["weight"][t].values())
            cells = [fmt(d["accuracy"][a][x][t]) for a in ALLOCATIONS for x in sorted(d["accuracy"][a])]
            lines.append(f"| {t} | {np.mean(act):.2f} | {np.max(act):.2f} | {np.mean(wt):.2f} | "
                         + " | ".join(cells) + " |")
        best = [f"-{float(x):.0%}: {b['method']} {fmt(b)}" for x, b in d["accuracy"]["best baseline"].items()
                if b is not None]
        lines += ["", "Best baseline (any non-MRP method of the study, recal): " + "; ".join(best) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo,vgg_demo")
    ap.add_argument("--thresholds", default=THRESHOLDS, help="MRPConfig field=value, comma-separated")
    ap.add_argument("--quality", help="the quality study's results (default: OUT/quality_cpu.json)")
    ap.add_argument("--tag", default="recal 2000 images", help="the quality study's protocol tag to read")
    ap.add_argument("--replace", default=SWEPT_RULE, help="the in-layer rule whose rows to read")
    ap.add_argument("--calib-size", type=int, default=MRPConfig().calib_size)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-root")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    out = Path(args.out)
    thresholds = args.thresholds.split(",")
    for t in thresholds:
        field, _, value = t.partition("=")
        if field not in ("chance_degree", "tau", "z"):
            raise SystemExit(f"--thresholds: {t!r} is not chance_degree=, tau= or z=")
        MRPConfig(**{field: float(value)})  # a bad value fails now
    quality_path = Path(args.quality) if args.quality else out / "quality_cpu.json"
    if not quality_path.is_file():
        raise SystemExit(f"{quality_path}: no quality results; run benchmarks/quality.py first")
    quality = json.loads(quality_path.read_text())
    result = {"command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
              "date": date.today().isoformat(), "machine": f"{platform.machine()}, CPU",
              "thresholds": thresholds, "calib_size": args.calib_size, "tag": args.tag, "quality": str(quality_path),
              "models": {}}
    for name in args.models.split(","):
        result["models"][name] = {"R": redundancy(name, thresholds, args.calib_size, args.data, args.data_root),
                                  "accuracy": accuracies(quality, name, thresholds, args.tag, args.replace)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "threshold_sweep.json", json.dumps(result, indent=1))
    plot(result, out / "threshold_sweep.png")
    text = markdown(result)
    atomic_write_text(out / "threshold_sweep.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
