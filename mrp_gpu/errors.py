"""Exceptions that carry a message meant for the user.

The command line prints an :class:`MRPError` as one line and exits with status 2;
any other exception is a bug and keeps its traceback.
"""

__all__ = ["MRPError", "ModelError", "WeightsError", "PlanError", "TargetError", "DataError"]


class MRPError(Exception):
    """Base class: the message names the problem (the layer, the file, the field)."""


class ModelError(MRPError, ValueError):
    """Unknown model name, or a model whose layers mrp_gpu cannot prune."""


class WeightsError(MRPError, ValueError):
    """A weights file that is missing, unreadable, or belongs to another architecture."""


class PlanError(MRPError, ValueError):
    """A pruning plan or saved pruned model that is malformed or made for another model."""


class TargetError(MRPError, ValueError):
    """A compression target that cannot be reached under the given constraints."""


class DataError(MRPError, ValueError):
    """A dataset that is missing or malformed."""
