"""Redundancy (RMCD): per-channel features, similarity graphs, and the per-group records of a pass.

:mod:`.features` turns a group's producers (or its responses to calibration images)
into one row per channel, :mod:`.calibration` is the one pass over the calibration
images that measures those responses and the consumers' input covariances,
:mod:`.similarity` builds every group's thresholded similarity graph in one batch
(:mod:`.similarity_numba` on a CPU, the kernels of ``mrp_gpu.kernels`` on a GPU), and
:mod:`.records` holds what ``mrp_gpu.analyze`` returns. Community detection itself lives in :mod:`mrp_gpu.community`.
"""

from .records import LayerRedundancy, RedundancyReport, layer_records

__all__ = ["LayerRedundancy", "RedundancyReport", "layer_records"]
