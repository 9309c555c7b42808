"""GPU kernels of mrp_gpu, installed as ``mrp_gpu.kernels``.

``similarity_edges``: the fused Numba CUDA kernel that turns every group's features
into sparse similarity edges in one launch (see :mod:`mrp_gpu.kernels.similarity`).
Importing this package never touches a GPU; numba is optional (the ``gpu`` extra).
"""

from .similarity import has_numba, kernel_usable, similarity_edges

__all__ = ["similarity_edges", "kernel_usable", "has_numba"]
