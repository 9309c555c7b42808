"""GPU kernels of mrp_gpu, installed as ``mrp_gpu.kernels``."""
