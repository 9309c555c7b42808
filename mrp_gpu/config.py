"""``MRPConfig``: what a user sets, in one frozen, versioned dataclass.

Three ways in: ``MRPConfig()`` with calibration images (data-driven: activation
features, the ``rebuild`` rule, the ``loss`` allocation, the least-squares refit),
``MRPConfig()`` without them (weight features, ``error-in-community``, uniform counts),
and ``MRPConfig.paper()`` (MRP as published). Every ``"auto"`` is decided in one place,
:meth:`MRPConfig.resolve`, and every output (plan.json, summary.json, report.md,
``analyze --json``) records the resolved config. ``docs/method.md`` says why each
default is what it is; the figures are on the generated results pages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import MRPError

__all__ = ["MRPConfig", "CONFIG_VERSION", "METHODS", "FEATURES", "ALLOCATIONS", "PAPER"]

CONFIG_VERSION = 2
FEATURES = ("auto", "weight", "activation")
ALLOCATIONS = ("auto", "uniform", "loss", "srp")
METHODS = ("mrp", "l1", "fpgm", "random", "uniform")  # the planners of ``mrp_gpu.api.plan``
# MRP as published (Gao et al. 2025): the SRP loop ranks layers by R alone, weight features, and
# nothing carries a removed filter's signal on (merges and the refit are this package's). The paper
# leaves "most replaceable" open; the member its community rebuilds best is the literal reading.
PAPER = {"allocation": "srp", "cost_aware": False, "features": "weight", "compensate": False, "refit": False,
         "replace": "reconstruction"}
# fields of version 1 that left the product, with the only value a version-1 config may hold for them
_RETIRED = {"bn_scale": False, "corrected_dim": True, "floor_communities": False}


def _auto_or_bool(name: str, value) -> None:
    if value != "auto" and not isinstance(value, bool):
        raise MRPError(f"{name} must be 'auto', True or False, got {value!r}")


@dataclass(frozen=True)
class MRPConfig:
    """Options of redundancy (RMCD) and of the pruning loop (SRP).

    Parameters
    ----------
    features : {"auto", "weight", "activation"}
        Per-channel features: the producing filters (data-free) or the channel's response
        to the calibration images. ``auto``: ``activation`` when images are given.
    z : float, optional
        Edge threshold in units of chance, ``tau_g = z / sqrt(d_g)``, the same for every
        group. None (default): each group gets the z at which a channel expects
        ``chance_degree`` neighbours by chance among its group's others.
    chance_degree : float
        Expected chance neighbours per channel that the default threshold allows.
    tau : float, optional
        An absolute cosine threshold for every group; overrides ``z``.
    k_max : int, optional
        Keep at most this many strongest neighbours per channel.
    resolution : float
        Louvain's modularity resolution ``gamma``.
    similarity : {"torch", "kernel"}
        Graphs from a matrix product per group, or from the fused Numba CUDA kernel over
        all groups at once (GPU; ``mrp_gpu.kernels``).
    backend : str
        Louvain engine (``mrp_gpu.community.ENGINES``); ``auto``: cuGraph or torch on a
        GPU, else numba, else igraph.
    device : {"auto", "cpu", "cuda"}
        Where features, graphs and the planner's matrices live.
    seed : int
        Seed of Louvain's node order and of every random choice.
    replace : str
        Which channel goes next: a rule of ``mrp_gpu.pruner.rules.RULES``. ``auto``:
        ``rebuild`` with calibration images, ``error-in-community`` without.
    compensate : "auto" or bool
        Fold each removed channel into its most similar community partner (its consumer
        weights move to the partner's, scaled by the ratio of their BN ``gamma``).
        ``auto``: on exactly when there is no refit, which replaces the merges.
    refit : "auto" or bool
        Refit the layers that read pruned channels by least squares on the calibration
        images before slicing, then re-estimate the BN statistics (``mrp_gpu.refit``).
        ``auto``: on when images are given.
    step : int or float
        Channels removed per SRP iteration: a count (>= 1), or a fraction (< 1) of the
        chosen group's current width.
    min_channels : int or float
        Channels every group keeps: a count (>= 1) or a fraction of its width (< 1).
    round_to : int
        Keep channel counts multiples of this (8 suits tensor cores); 1 = off.
    cost_aware : bool
        ``allocation="srp"``: rank groups by ``R_g`` times the MACs one of their channels
        costs (normalised), not by ``R_g`` alone.
    allocation : {"auto", "uniform", "loss", "srp"}
        How the cut is spread over groups (``mrp_gpu.pruner.allocation``). ``auto``:
        ``loss`` with calibration images, ``uniform`` without.
    refresh_every : int
        Weight features: groups whose filters lost input columns get their graphs
        recomputed every this many iterations, and always just before they are chosen.
    calib_size : int
        Calibration images (activation features and the refit).
    pool : int
        Activation maps are average-pooled to ``pool x pool``.
    distill : int
        Adam steps of distillation after slicing: the pruned model trained towards the
        unpruned one's logits on ``distill_size`` training images, no labels
        (``mrp_gpu.distill``). 0 (default): off.
    distill_size : int
        Training images the distillation draws from (the first ``calib_size`` of
        them are the calibration images).
    """

    features: str = "auto"
    z: float | None = None
    chance_degree: float = 0.05
    tau: float | None = None
    k_max: int | None = None
    resolution: float = 1.0
    similarity: str = "torch"
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    replace: str = "auto"
    compensate: bool | str = "auto"
    refit: bool | str = "auto"
    step: float = 1
    min_channels: float = 1
    round_to: int = 1
    cost_aware: bool = True
    allocation: str = "auto"
    refresh_every: int = 16
    calib_size: int = 256
    pool: int = 4
    distill: int = 0
    distill_size: int = 2048

    def __post_init__(self):
        from .pruner.rules import RULES

        if self.features not in FEATURES:
            raise MRPError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.similarity not in ("torch", "kernel"):
            raise MRPError(f"similarity must be 'torch' or 'kernel', got {self.similarity!r}")
        if self.replace != "auto" and self.replace not in RULES:
            raise MRPError(f"replace must be 'auto' or one of {tuple(RULES)}, got {self.replace!r}")
        if self.allocation not in ALLOCATIONS:
            raise MRPError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        _auto_or_bool("compensate", self.compensate)
        _auto_or_bool("refit", self.refit)
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
        for name in ("step", "min_channels"):
            v = getattr(self, name)
            if not (v >= 1 or 0 < v < 1):
                raise MRPError(f"{name} must be a count >= 1 or a fraction in (0, 1), got {v}")
        if isinstance(self.distill, bool) or not isinstance(self.distill, int) or self.distill < 0:
            raise MRPError(f"distill must be a number of steps >= 0, got {self.distill!r}")
        for name in ("round_to", "refresh_every", "calib_size", "pool", "distill_size"):
            if getattr(self, name) < 1:
                raise MRPError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def paper(cls, **changes) -> MRPConfig:
        """MRP as published (``PAPER``), with ``changes`` on top."""
        return cls(**(PAPER | changes))

    def resolve(self, has_data: bool) -> tuple[MRPConfig, dict[str, str]]:
        """Every ``auto`` decided from what is known: whether calibration images are given.

        Returns the resolved config and, for each field it decided, why. Raises
        :class:`MRPError` for a combination that cannot run (a rule that needs images
        without them, the loss allocation with a rule that supplies no loss).
        """
        from .pruner.rules import RULES

        why, changes = {}, {}

        def decide(name: str, value, reason: str) -> None:
            if getattr(self, name) == "auto" and name not in changes:
                changes[name], why[name] = value, reason

        data = "calibration images given" if has_data else "no calibration images"
        decide("features", "activation" if has_data else "weight", data)
        decide("replace", "rebuild" if has_data else "error-in-community", data)
        decide("refit", has_data, data)
        rule = RULES[changes.get("replace", self.replace)]
        if has_data and rule.loss is None:
            decide("allocation", "uniform", f"replace={rule.name!r} supplies no loss for the loss allocation")
        decide("allocation", "loss" if has_data else "uniform", data)
        config = dataclasses.replace(self, **changes)
        if config.compensate == "auto":
            config = dataclasses.replace(config, compensate=not config.refit)
            why["compensate"] = "the refit replaces the merges" if config.refit else "no refit"
        rule = RULES[config.replace]
        if rule.needs_calibration and not has_data:
            raise MRPError(f"replace={config.replace!r} needs calibration images (--data)")
        if (config.features == "activation" or config.refit or config.distill) and not has_data:
            need = ("features='activation'" if config.features == "activation" else
                    "refit" if config.refit else "distill")
            raise MRPError(f"{need} needs calibration images (--data)")
        if config.allocation == "loss" and rule.loss is None:
            losses = tuple(name for name, r in RULES.items() if r.loss is not None)
            raise MRPError(f"allocation='loss' ranks groups by the loss of a replace rule among {losses}, "
                           f"not {config.replace!r}")
        return config, why

    def resolved(self, has_data: bool) -> MRPConfig:
        """:meth:`resolve` without the reasons."""
        return self.resolve(has_data)[0]

    def replace_with(self, **changes) -> MRPConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> MRPConfig:
        """A config from :meth:`to_dict` (version 2, or 1 with its retired fields at their defaults)."""
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version not in (1, CONFIG_VERSION):
            raise MRPError(f"config version {version} is not supported (expected {CONFIG_VERSION})")
        if version == 1:
            for name, only in _RETIRED.items():
                if d.pop(name, only) != only:
                    raise MRPError(f"config field {name!r} is no longer supported (only {only!r} is)")
            if d.get("refit", "auto") is None:
                d["refit"] = "auto"
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise MRPError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)
