"""The RI-hypothesis study (docs/method.md, section 8) on a trained model.

Part 1, layer level: remove ``--fraction`` (30 %) of one group at a time, the most
replaceable channels first (MRP's own removal order), and measure the accuracy drop
without retraining; the Spearman correlation between the group's redundancy ``R``
and ``-drop`` says whether redundant layers are the ones that can lose channels.
``R`` is computed under every edge threshold of ``--thresholds`` (``MRPConfig`` fields),
on weight features and on activation features of a calibration batch (training
images), so the correlation is reported for each threshold.

Part 2, filter level: inside chosen groups, remove a growing fraction of channels by
each candidate rule: MRP's removal order under every ``replace`` rule (each also with
``compensate``: the removed channel folded into its most similar community partner),
random (mean over seeds), smallest L1, and the *least* replaceable first (MRP's
order reversed). ``+refit`` variants: the package's data-driven default, the removed
channels' consumers refit by least squares on the calibration batch and the BN statistics
re-estimated (``mrp_gpu.refit``); ``mrp:default+refit`` removes in the default's own
order with data (activation features, the ``rebuild`` rule), as ``mrp-gpu prune --data``
does, and ``mrp:error-in-community+refit`` in the order of the earlier default rule.
The same fraction is also removed from every group by every rule, one group at a
time, to compare the rules over the whole model: the rule with the smallest mean
drop is the default's best candidate.

Accuracy is measured on a fixed subset of the test set, the same images for every
variant (paired comparisons), with masked models (exactly the sliced ones).

    python benchmarks/ri_study.py --model demo --data fashion-mnist --out benchmarks/results
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import study_rules  # noqa: F401  the rules this study compares beside the product's
import torch

from mrp_gpu import analyze
from mrp_gpu.config import MRPConfig
from mrp_gpu.criteria import channel_scores
from mrp_gpu.data import calibration_batch, get_dataset
from mrp_gpu.dependency.groups import build_groups
from mrp_gpu.executor import apply_masks
from mrp_gpu.finetune import recalibrate_bn
from mrp_gpu.io import atomic_write_text
from mrp_gpu.models import create_model, default_input_size
from mrp_gpu.plan import PruningPlan
from mrp_gpu.pruner import RULES, removal_order
from mrp_gpu.refit import refit

THRESHOLDS = "chance_degree=0.05,chance_degree=0.01,chance_degree=0.001,chance_degree=0.0001,tau=0.3,tau=0.5,tau=0.7"


def ranks(x) -> np.ndarray:
    """Ranks with ties sharing their mean rank."""
    x = np.asarray(x, dtype=float)
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(a, b) -> float:
    """Spearman's rho (ties ranked by their mean); NaN when either side is constant."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


class Evaluator:
    """Accuracy of masked variants of one model on a fixed test subset."""

    def __init__(self, model, groups, data, size, n, calibration, root=None):
        ds = get_dataset(data, train=False, input_size=size, root=root, augment=False)
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].tolist()
        self.x = torch.stack([ds[i][0] for i in idx])
        self.y = torch.tensor([ds[i][1] for i in idx])
        self.model, self.groups, self.size = model, groups, size
        self.base = self.accuracy(model)
        # refit variants re-estimate BN statistics: their drops are taken from the unpruned
        # model with its statistics re-estimated on the same images
        self.calibration = calibration
        self.base_recal = self.accuracy(recalibrate_bn(copy.deepcopy(model), calibration))

    @torch.no_grad()
    def accuracy(self, model) -> float:
        model.eval()
        hits = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(self.x.split(500), self.y.split(500)))
        return hits / len(self.y)

    def drop(self, group: str, removed, merges=(), refit_: bool = False) -> float:
        """Accuracy points lost when ``removed`` channels of ``group`` are masked (after ``merges``),
        or, with ``refit_``, refit on the calibration images with the BN statistics re-estimated."""
        g = self.groups[group]
        kept = tuple(sorted(set(range(g.size)) - set(int(c) for c in removed)))
        plan = PruningPlan("study", self.size, {x.id: x.size for x in self.groups}, {group: kept}, "study",
                           merges=[m for m in merges if m is not None])
        if not refit_:
            return 100 * (self.base - self.accuracy(apply_masks(self.model, plan, self.groups)))
        masked, _ = refit(self.model, plan, self.calibration, self.groups)
        return 100 * (self.base_recal - self.accuracy(recalibrate_bn(masked, self.calibration)))


DATA_FREE_RULES = [name for name, rule in RULES.items() if not rule.needs_calibration]


def default_criterion() -> str:
    """The data-free default's name (the ``+refit`` rows hold the default with data)."""
    d = MRPConfig().resolved(has_data=False)
    return f"mrp:{d.replace}" + ("+compensate" if d.compensate else "")


def orders_for(model, groups, group, seeds, calibration) -> dict[str, list[tuple[list[int], list]]]:
    """Removal orders (most removable first) of one group, per criterion: (order, merges) over seeds.

    ``+compensate`` variants remove in the same order as their rule and fold each
    removed channel into its community partner first; ``+refit`` variants (their merges
    are ``None``: the refit supersedes them) are scored after a least-squares refit.
    """
    out = {}
    for rule in DATA_FREE_RULES:
        order, merges = removal_order(model, groups, group, MRPConfig(replace=rule))
        out[f"mrp:{rule}"] = [(order, [])]
        out[f"mrp:{rule}+compensate"] = [(order, merges)]
    out["least-replaceable"] = [(out[f"mrp:{MRPConfig().resolved(has_data=False).replace}"][0][0][::-1], [])]
    g = groups[group]
    out["l1"] = [(np.argsort(channel_scores(model, g, "l1"), kind="stable").tolist(), [])]
    out["random"] = [(np.random.default_rng(s).permutation(g.size).tolist(), []) for s in seeds]
    out["mrp:default+refit"] = [(removal_order(model, groups, group, MRPConfig(), calibration)[0], None)]
    out["mrp:error-in-community+refit"] = [
        (removal_order(model, groups, group, MRPConfig(replace="error-in-community"), calibration)[0], None)]
    out["l1+refit"] = [(out["l1"][0][0], None)]
    out["random+refit"] = [(o, None) for o, _ in out["random"]]
    return out


def score(ev: Evaluator, group: str, orders, k: int) -> float:
    """Mean drop over the orders (seeds) of one criterion with ``k`` channels removed."""
    return float(np.mean([ev.drop(group, o[:k], refit_=True) if m is None else ev.drop(group, o[:k], m[:k])
                          for o, m in orders]))


def redundancy_by_threshold(model, size, groups, thresholds: list[str], calibration) -> dict:
    """``{features: {threshold: {group: R}}}`` for weight and activation features."""
    out = {}
    for features, images in (("weight", None), ("activation", calibration)):
        out[features] = {}
        for t in thresholds:
            field, value = t.split("=")
            report = analyze(model, size, MRPConfig(features=features, **{field: float(value)}),
                             calibration=images, groups=groups)
            out[features][t] = {k: float(v) for k, v in report.redundancy.items()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--weights")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--data-root")
    p.add_argument("--fraction", type=float, default=0.3)
    p.add_argument("--curve-groups", default="layer1.0.conv1,layer2.0.conv2,layer3.1.conv1",
                   help="groups for the filter-level curves")
    p.add_argument("--fractions", default="0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--images", type=int, default=5000, help="test images per accuracy (fixed subset)")
    p.add_argument("--seeds", type=int, default=3, help="random orders averaged")
    p.add_argument("--thresholds", default=THRESHOLDS,
                   help="edge thresholds (MRPConfig field=value) under which R is correlated with the drops")
    p.add_argument("--calib-size", type=int, default=MRPConfig().calib_size,
                   help="training images for activation features and the refit")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--replot", action="store_true", help="redraw md and plots from OUT/ri_study.json only")
    args = p.parse_args(argv)
    if args.replot:
        out = Path(args.out)
        result = json.loads((out / "ri_study.json").read_text())
        result["part1"]["default_criterion"] = default_criterion()
        plots(result, out)
        atomic_write_text(out / "ri_study.md", markdown(result))
        return 0
    torch.set_num_threads(2)
    t0 = time.time()

    model = create_model(args.model, weights=args.weights or "default")
    size = default_input_size(args.model)
    groups = build_groups(model, size)
    calibration = calibration_batch(args.data, size, n=args.calib_size, root=args.data_root)
    ev = Evaluator(model, groups, args.data, size, args.images, calibration, args.data_root)
    R = analyze(model, size, groups=groups).redundancy
    thresholds = args.thresholds.split(",")
    by_threshold = redundancy_by_threshold(model, size, groups, thresholds, calibration)
    seeds = list(range(args.seeds))

    # every group: orders under every criterion; the drop at --fraction
    per_group = {}
    for g in groups:
        orders = orders_for(model, groups, g.id, seeds, calibration)
        k = int(round(args.fraction * g.size))
        drops = {name: score(ev, g.id, os_, k) for name, os_ in orders.items()}
        per_group[g.id] = {"channels": g.size, "removed": k, "R": R[g.id], "drop": drops, "orders": orders}
        print(f"{g.id:16s} R={R[g.id]:5.2f}  " + "  ".join(f"{n}={d:5.2f}" for n, d in drops.items()), flush=True)

    default = default_criterion()
    ids = list(per_group)
    r = np.array([per_group[i]["R"] for i in ids])
    part1 = {name: spearman(r, [-per_group[i]["drop"][name] for i in ids])
             for name in per_group[ids[0]]["drop"]}
    by_threshold_rho = {features: {t: {name: spearman([rs[i] for i in ids], [-per_group[i]["drop"][name] for i in ids])
                                       for name in (default, "mrp:default+refit", "l1", "l1+refit")}
                                   for t, rs in ts.items()}
                        for features, ts in by_threshold.items()}
    criteria = list(per_group[ids[0]]["drop"])
    summary = {name: {"mean_drop": float(np.mean([per_group[i]["drop"][name] for i in ids])),
                      "better_than_l1_in": int(sum(per_group[i]["drop"][name] < per_group[i]["drop"]["l1"]
                                                   for i in ids))}
               for name in criteria}

    # filter-level curves in the chosen groups
    fractions = [float(f) for f in args.fractions.split(",")]
    curves = {}
    for gid in args.curve_groups.split(","):
        n = per_group[gid]["channels"]
        curves[gid] = {name: [score(ev, gid, os_, int(round(f * n))) for f in fractions]
                       for name, os_ in per_group[gid]["orders"].items()}

    result = {
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]), "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, CPU", "model": args.model,
        "data": args.data, "images": args.images, "base_accuracy": ev.base, "fraction": args.fraction,
        "calib_size": args.calib_size, "base_accuracy_recal": ev.base_recal,
        "seconds": round(time.time() - t0, 1),
        "part1": {"spearman_R_vs_minus_drop": part1, "default_criterion": default,
                  "by_threshold": {"R": by_threshold, "spearman_R_vs_minus_drop": by_threshold_rho}},
        "rules_at_fraction": summary,
        "groups": {i: {k: v for k, v in d.items() if k != "orders"} for i, d in per_group.items()},
        "curves": {"fractions": fractions, "groups": curves},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ri_study.json", json.dumps(result, indent=1))
    plots(result, out)
    atomic_write_text(out / "ri_study.md", markdown(result))
    print(markdown(result))
    return 0


def plots(result, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = result["part1"]["default_criterion"]
    g = result["groups"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = [d["R"] for d in g.values()]
    ys = [d["drop"][default] for d in g.values()]
    ax.scatter(xs, ys)
    for name, x, y in zip(g, xs, ys):
        ax.annotate(name, (x, y), fontsize=6)
    rho = result["part1"]["spearman_R_vs_minus_drop"][default]
    ax.set_xlabel("redundancy R of the group")
    ax.set_ylabel(f"accuracy drop (points), {result['fraction']:.0%} removed")
    ax.set_title(f"Layer level: Spearman(R, -drop) = {rho:.2f}")
    fig.savefig(out / "ri_layer_scatter.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    curves = result["curves"]
    fig, axes = plt.subplots(1, len(curves["groups"]), figsize=(4.5 * len(curves["groups"]), 3.8), squeeze=False)
    colors = {"norm-in-community": "C0", "mean-sim": "C1", "nearest": "C2", "reconstruction": "C3",
              "reconstruction-norm": "C4", "norm-in-redundant": "C5", "error": "C6", "error-in-community": "C7",
              "default": "C9", "least-replaceable": "C8", "l1": "black", "random": "grey"}
    for ax, (gid, by_rule) in zip(axes[0], curves["groups"].items()):
        for name, ys in by_rule.items():
            base = name.removeprefix("mrp:").removesuffix("+compensate").removesuffix("+refit")
            ax.plot(curves["fractions"], ys, marker="o", ms=3, label=name, color=colors.get(base),
                    ls="--" if name.endswith("+compensate") else ":" if name.endswith("+refit") else "-")
        ax.set_title(f"{gid} (R={g[gid]['R']:.2f})")
        ax.set_xlabel("fraction of the group removed")
        ax.set_ylabel("accuracy drop (points)")
    axes[0][0].legend(fontsize=7)
    fig.savefig(out / "ri_filter_curves.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def markdown(result) -> str:
    lines = [f"# RI study: {result['model']} on {result['data']}", "",
             f"{result['date']}, {result['machine']}; `{result['command']}`; "
             f"{result['images']} test images, base accuracy {result['base_accuracy']:.2%}; "
             f"{result['seconds']:.0f} s."
             + (f" `+refit` rows: {result['calib_size']} calibration images; their drops are from the unpruned "
                f"model with BN statistics re-estimated on them ({result['base_accuracy_recal']:.2%})."
                if "base_accuracy_recal" in result else ""), "",
             f"## Part 1: redundancy vs. sensitivity ({result['fraction']:.0%} of one group removed)", "",
             "| removal order | Spearman(R, -drop) |", "|---|---|"]
    lines += [f"| {k} | {v:+.2f} |" for k, v in result["part1"]["spearman_R_vs_minus_drop"].items()]
    by_threshold = result["part1"].get("by_threshold")
    if by_threshold:
        rho = by_threshold["spearman_R_vs_minus_drop"]
        names = list(next(iter(next(iter(rho.values())).values())))
        lines += ["", "The same correlation with R computed under each edge threshold (weight features, as "
                  "above, and activation features of the calibration batch), against the drops of the "
                  "default's removal order and of smallest-L1, each without and with the refit:", "",
                  "| threshold | features | mean R | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for features, ts in rho.items():
            for t, row in ts.items():
                mean_r = np.mean(list(by_threshold["R"][features][t].values()))
                cells = " | ".join("n/a (R constant)" if np.isnan(row[n]) else f"{row[n]:+.2f}" for n in names)
                lines.append(f"| {t} | {features} | {mean_r:.2f} | {cells} |")
    lines += ["", "![layer level](ri_layer_scatter.png)", "",
              f"## Part 2: which channel goes ({result['fraction']:.0%} of each group, one group at a time)", "",
              "| criterion | mean drop (points) | better than L1 in (groups) |", "|---|---|---|"]
    n = len(result["groups"])
    for k, v in sorted(result["rules_at_fraction"].items(), key=lambda kv: kv[1]["mean_drop"]):
        lines.append(f"| {k} | {v['mean_drop']:.2f} | {v['better_than_l1_in']} of {n} |")
    lines += ["", "| group | channels | R | " + " | ".join(result["rules_at_fraction"]) + " |",
              "|---|---|---|" + "---|" * len(result["rules_at_fraction"])]
    for gid, d in result["groups"].items():
        lines.append(f"| {gid} | {d['channels']} | {d['R']:.2f} | "
                     + " | ".join(f"{d['drop'][k]:.2f}" for k in result["rules_at_fraction"]) + " |")
    lines += ["", "![filter level](ri_filter_curves.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
