from pathlib import Path

from setuptools import setup

about = {}
exec((Path(__file__).parent / "mrp_gpu" / "_version.py").read_text(), about)

setup(
    name="mrp_gpu",
    version=about["__version__"],
    description="GPU-accelerated Maximum Redundancy Pruning: community detection "
    "on filter-similarity graphs to prune convolutional networks.",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "mrp_gpu",
        "mrp_gpu.cli",
        "mrp_gpu.community",
        "mrp_gpu.dependency",
        "mrp_gpu.integrations",
        "mrp_gpu.kernels",
        "mrp_gpu.pruner",
        "mrp_gpu.pruner.allocation",
        "mrp_gpu.pruner.state",
        "mrp_gpu.redundancy",
    ],
    package_dir={"mrp_gpu.kernels": "kernels"},
    package_data={"mrp_gpu": ["zoo/*.safetensors", "zoo/*.json"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy>=1.24",
        "torch-pruning>=1.5,<2",
        "python-igraph>=0.11",
        "numba>=0.59",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "gpu": ["numba-cuda>=0.10", "cupy-cuda12x>=13", "cugraph-cu12>=24.10"],
        "timm": ["timm>=0.9"],
        "dev": [
            "timm>=0.9",
            "pytest>=8",
            "ruff>=0.5",
            "hypothesis>=6.100",
            "networkx>=3.2",
            "scipy>=1.11",
            "numba-cuda>=0.10",
        ],
    },
    entry_points={"console_scripts": ["mrp-gpu=mrp_gpu.cli:main"]},
)
