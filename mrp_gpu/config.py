"""``MRPConfig``: every option of the method in one frozen, versioned dataclass.

Every output (plan.json, summary.json, analyze --json) records the resolved config
that made it. Defaults are the ones the RI study in ``benchmarks/ri_study.py``
supports; the README gives the figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import MRPError

__all__ = ["MRPConfig", "CONFIG_VERSION", "TRACE_TIMEOUT", "METHODS", "FEATURES", "REPLACE_RULES", "ALLOCATIONS",
           "PAPER"]

CONFIG_VERSION = 1
TRACE_TIMEOUT = 300.0  # seconds: the dependency tracer has spent minutes on some graphs without an end
FEATURES = ("auto", "weight", "activation")
REPLACE_RULES = ("auto", "norm-in-community", "norm-in-redundant", "mean-sim", "nearest", "reconstruction",
                 "reconstruction-norm", "error", "error-in-community", "rebuild", "rebuild-in-community")
ALLOCATIONS = ("auto", "uniform", "loss", "srp", "log-r")
METHODS = ("mrp", "l1", "fpgm", "random", "uniform")  # the planners of ``mrp_gpu.plan``
# MRP as published (Gao et al. 2025): the SRP loop ranks layers by R alone, weight features,
# and nothing carries a removed filter's signal on (compensation and refit are this package's).
# The paper leaves "most replaceable" open; the member its community rebuilds best is the literal reading.
PAPER = {"allocation": "srp", "cost_aware": False, "features": "weight", "compensate": False, "refit": False,
         "replace": "reconstruction"}


@dataclass(frozen=True)
class MRPConfig:
    """Options of RMCD (redundancy) and SRP (the pruning loop).

    Parameters
    ----------
    features : {"auto", "weight", "activation"}
        Per-channel features: the producing filters (data-free) or the channel's
        response to a calibration batch. ``auto`` (default): ``activation`` when
        calibration images are given, ``weight`` otherwise (see :meth:`resolved`).
    bn_scale : bool
        Append each channel's BN scale to its weight feature. The scale is one large,
        uncentred coordinate: with the default chance-corrected threshold it can carry
        most of the energy, shrink ``d_g`` towards 1 and remove every edge
        (``mrp-gpu analyze demo --bn-scale`` finds ``R = 1`` in every layer). Use it with
        an absolute ``tau``.
    z : float, optional
        Edge threshold in units of chance, ``tau_g = z / sqrt(d_g)``, the same for every
        group. When None (default), each group gets the z at which a channel expects
        ``chance_degree`` neighbours by chance among its group's others.
    chance_degree : float
        Expected chance neighbours per channel that the default threshold allows.
    corrected_dim : bool
        ``d_g`` is the participation ratio of the features (their effective dimension
        under the chance model) rather than their raw length.
    tau : float, optional
        An absolute cosine threshold for every group; overrides ``z``.
    k_max : int, optional
        Keep at most this many strongest neighbours per channel.
    resolution : float
        Louvain's modularity resolution ``gamma``.
    similarity : {"torch", "kernel"}
        How graphs are built: a matrix product per group, or the fused Numba CUDA
        kernel over all groups at once (GPU; see ``mrp_gpu.kernels``).
    backend : str
        Louvain engine: ``auto``, ``numba``, ``igraph``, ``leiden``, ``torch``, ``cugraph``,
        ``networkx`` (``auto``: cuGraph or torch on a GPU, else numba, else igraph).
        ``leiden`` (igraph's Leiden, modularity objective) starts every SRP refresh
        from the partition before the removal (a warm start).
    device : str
        Where features and graphs live: ``auto``, ``cpu``, ``cuda``.
    seed : int
        Seed of Louvain's node order and of every random choice.
    replace : str
        Which channel goes next (``mrp_gpu.redundancy``). ``auto`` (default):
        ``rebuild`` with calibration images, ``error-in-community`` without.
        ``rebuild``: the channel whose removal its consumers feel least once refit by
        least squares on every survivor, computed on their real inputs (every ``k x k``
        patch, after the activation: Optimal Brain Surgeon with each consumer's exact
        Hessian); ``rebuild-in-community``: the same among the largest community's
        members. ``error-in-community``: the member of the largest community whose
        loss the same refit leaves smallest, estimated from the group's pooled features
        (the share of it the others cannot rebuild, times its BN ``gamma`` squared,
        times the energy of the weights that read it); ``error``: that estimate over
        every live channel. ``reconstruction`` (the member its community rebuilds
        best), ``reconstruction-norm``, ``norm-in-community``, ``norm-in-redundant``,
        ``mean-sim``, ``nearest``. In the quality study
        (``benchmarks/results/quality_cpu.md``, ``recal``, 3 seeds, uniform counts and
        the refit) ``rebuild`` keeps 92.37 / 90.89 / 92.64 / 92.27 % (demo and
        vgg_demo at -50 / -70 % MACs) where ``error-in-community`` kept 92.05 / 88.73 /
        92.42 / 91.77 and uniform counts + smallest L1 + the same refit 92.41 / 88.88 /
        92.57 / 91.69; ``rebuild-in-community`` 92.46 / 90.58 / 92.67 / 92.05.
    compensate : bool
        Without ``refit``: fold each removed channel into its most similar remaining
        community partner (the partner's consumer weights gain the removed channel's,
        times the ratio of their BN ``gamma``). In the RI study
        (``benchmarks/results/ri_study.md``, no BN recalibration), removing 30 % of one
        layer of the demo by ``norm-in-community`` cost 12.7 points on average without
        it and 4.2 with it; with BN statistics re-estimated (the quality study's
        ``recal``, the SRP allocation on weight features, -50 % MACs) it hurts
        instead: 23.3 % with it, 39.0 % without.
    refit : bool or None
        Before slicing, refit the weights of every layer that read pruned channels by
        least squares on calibration images (:func:`mrp_gpu.refit.refit`), so the
        survivors carry the removed channels' signal as well as a linear map can, and
        re-estimate the BN statistics on them. Supersedes ``compensate``'s merges.
        None (default): on when calibration images are given.
    step : int or float
        Channels removed per SRP iteration: a count (>= 1), or a fraction (< 1) of the
        chosen group's current width (at least one channel).
    min_channels : int or float
        Channels every group keeps: a count (>= 1) or a fraction of its width (< 1).
    round_to : int
        Keep channel counts multiples of this (8 suits tensor cores); 1 = off.
    cost_aware : bool
        ``allocation="srp"``: rank groups by ``R_g`` times the MACs one of its channels
        costs (normalised), not ``R_g`` alone: in the 1-epoch fine-tuning study (the
        demo at -50 % MACs, 3 seeds) 90.90 ± 0.24 % against 87.67 ± 1.04 %.
    allocation : {"auto", "uniform", "loss", "srp", "log-r"}
        How the cut is spread over groups. ``auto`` (default): ``loss`` with calibration
        images, ``uniform`` without (and ``uniform`` for models whose groups feed grouped
        convolutions, which the loop cannot cut evenly yet). ``loss``: the SRP loop, but
        always the group whose next channel (by ``replace``, an ``error`` or ``rebuild``
        rule) costs its consumers least per MAC it saves: "most redundant" read as
        "cheapest to rebuild". ``uniform``: the same fraction everywhere. ``srp``: the
        paper's loop, always the group with the highest ``R`` (``cost_aware``: times
        the MACs a channel saves). ``log-r``: each group loses a fraction of its width
        in proportion to ``log R_g`` of the unpruned model (``R_g = 1``: left whole),
        scaled to meet the target. With ``uniform`` and ``log-r`` channels go in each
        group's own removal order. In the quality study (3 seeds, with ``rebuild`` and
        the refit) ``loss`` was ahead of ``uniform`` in 9 of the 12 cells of ``recal``,
        ``finetune`` and ``scratch`` (by up to 0.40 points) and at most 0.10 behind in
        the other three; SRP by ``R`` lost to uniform in every ``recal`` comparison
        (``docs/method.md``, section 8).
    floor_communities : bool
        No group goes below the number of communities it had before pruning (one
        survivor per community, the literal reading of "redundant").
    refresh_every : int
        Weight features: groups whose filters lost input columns (a consumer of a
        pruned group) get their graphs and communities recomputed every this many
        iterations, and always just before they are chosen. 16 by default: on the
        demo at -50 % MACs, 1, 4, 16 and never (only before being chosen) gave
        per-layer kept counts within 4 channels of each other, and 16 plans 2.5x
        faster than 1.
    calib_size : int
        Images in the calibration batch (activation features).
    pool : int
        Activation maps are average-pooled to ``pool x pool``.
    """

    features: str = "auto"
    bn_scale: bool = False
    z: float | None = None
    chance_degree: float = 0.05
    corrected_dim: bool = True
    tau: float | None = None
    k_max: int | None = None
    resolution: float = 1.0
    similarity: str = "torch"
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    replace: str = "auto"
    compensate: bool = True
    refit: bool | None = None
    step: float = 1
    min_channels: float = 1
    round_to: int = 1
    cost_aware: bool = True
    allocation: str = "auto"
    floor_communities: bool = False
    refresh_every: int = 16
    calib_size: int = 256
    pool: int = 4

    def __post_init__(self):
        if self.features not in FEATURES:
            raise MRPError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.similarity not in ("torch", "kernel"):
            raise MRPError(f"similarity must be 'torch' or 'kernel', got {self.similarity!r}")
        if self.replace not in REPLACE_RULES:
            raise MRPError(f"replace must be one of {REPLACE_RULES}, got {self.replace!r}")
        if self.allocation not in ALLOCATIONS:
            raise MRPError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.tau is not None and not -1.0 <= self.tau <= 1.0:
            raise MRPError(f"tau is a cosine threshold in [-1, 1], got {self.tau}")
        if self.z is not None and self.z <= 0:
            raise MRPError(f"z must be > 0, got {self.z}")
        if not self.chance_degree > 0:
            raise MRPError(f"chance_degree must be > 0, got {self.chance_degree}")
        if self.k_max is not None and self.k_max < 1:
            raise MRPError(f"k_max must be >= 1, got {self.k_max}")
        if self.resolution <= 0:
            raise MRPError(f"resolution must be > 0, got {self.resolution}")
        if not (self.step >= 1 or 0 < self.step < 1):
            raise MRPError(f"step must be a count >= 1 or a fraction in (0, 1), got {self.step}")
        for name in ("round_to", "refresh_every", "calib_size", "pool"):
            if getattr(self, name) < 1:
                raise MRPError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.min_channels >= 1 or 0 < self.min_channels < 1):
            raise MRPError(f"min_channels must be a count >= 1 or a fraction in (0, 1), got {self.min_channels}")

    def resolved(self, has_data: bool) -> MRPConfig:
        """The config with ``auto`` choices made: data-driven (activation features, refit)
        when calibration images are given, data-free otherwise. Every output records the
        resolved config."""
        changes = {}
        if self.features == "auto":
            changes["features"] = "activation" if has_data else "weight"
        if self.refit is None:
            changes["refit"] = has_data
        if self.replace == "auto":
            changes["replace"] = "rebuild" if has_data else "error-in-community"
        if self.allocation == "auto":
            changes["allocation"] = "loss" if has_data else "uniform"
        return self.replace_with(**changes) if changes else self

    def replace_with(self, **changes) -> MRPConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> MRPConfig:
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise MRPError(f"config version {version} is not supported (expected {CONFIG_VERSION})")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise MRPError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)
