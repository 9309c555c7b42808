"""Forward hooks on a user's model, registered all or none.

A pass that collects with hooks registers one per layer it reads. If one of them fails
to register (a layer name the model does not have), the ones before it must not stay on
the model: every later forward would still run them. :func:`hooked` registers them one
by one and removes every one registered, on failure as on success.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch.utils.hooks import RemovableHandle

__all__ = ["hooked"]


@contextlib.contextmanager
def hooked(registrations: Iterable[RemovableHandle]) -> Iterator[None]:
    """Within it, the hooks ``registrations`` makes (pass a generator: each is registered as it
    is drawn, inside the guard) are on the model; on leaving, and when one fails, none are."""
    handles = []
    try:
        for handle in registrations:
            handles.append(handle)
        yield
    finally:
        for handle in handles:
            handle.remove()
