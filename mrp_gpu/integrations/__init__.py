"""Bridges to other pruners: :mod:`mrp_gpu.integrations.torch_pruning`."""
