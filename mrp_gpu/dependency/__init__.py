"""Dependency: the model's channel groups (traced with Torch-Pruning), their analytic costs, and attention.

:mod:`.groups` finds every set of channels that must be pruned together, :mod:`.cost`
counts MACs and parameters as a function of the kept counts, and :mod:`.attention`
handles the products inside attention blocks.
"""

TRACE_TIMEOUT = 300.0  # seconds: the dependency tracer has spent minutes on some graphs without an end
