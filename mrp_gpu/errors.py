"""Exceptions that carry a message meant for the user.

The command line prints an :class:`MRPError` as one line and exits with status 2.
Inside the pipeline, :func:`stage` turns any other failure into a :class:`ModelError`
that names the stage and, where it can tell, the layer (the original exception stays
chained as its ``__cause__``).
"""

import contextlib

__all__ = ["MRPError", "ModelError", "WeightsError", "PlanError", "TargetError", "DataError", "stage"]


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


def _layer_of(exc: BaseException, model) -> str | None:
    """The innermost layer the traceback was in: a module of ``model`` running its
    forward, or a channel group or layer slice mrp_gpu was working on."""
    names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        owner = local.get("self")
        if id(owner) in names and names[id(owner)]:
            found = f"{names[id(owner)]} ({type(owner).__name__})"
        for key in ("s", "group", "g"):  # mrp_gpu's loops over LayerSlice / ChannelGroup records
            item = local.get(key)
            label = getattr(item, "module", None) or getattr(item, "id", None)
            if isinstance(label, str) and type(item).__name__ in ("LayerSlice", "ChannelGroup"):
                found = label
        tb = tb.tb_next
    return found


@contextlib.contextmanager
def stage(name: str, model=None):
    """Run a pipeline stage; an unexpected failure becomes one :class:`ModelError` naming
    ``name`` and the layer (found in the traceback, among ``model``'s modules)."""
    try:
        yield
    except MRPError:
        raise
    except Exception as e:
        layer = _layer_of(e, model)
        where = f" at {layer}" if layer else ""
        raise ModelError(f"{name} failed{where}: {type(e).__name__}: {str(e)[:300]} (mrp_gpu cannot handle this "
                         "model there yet)") from e
