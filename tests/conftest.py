"""Test configuration: ``gpu`` tests skip cleanly without CUDA; shared small fixtures."""

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
if not torch.cuda.is_available():
    # Numba CUDA kernels run in Numba's simulator on machines without a GPU; this must be
    # set before numba is first imported.
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def edge_oracle(f: np.ndarray, tau: float, k_max=None) -> set:
    """float64 numpy: edges (i, j), i != j, S >= tau and S > 0, top-k union."""
    s = f @ f.T
    n = len(f)
    keep = (s >= tau) & (s > 0) & ~np.eye(n, dtype=bool)
    if k_max is not None and k_max < n - 1:
        masked = np.where(keep, s, -np.inf)
        top = np.zeros_like(keep)
        nbr = np.argsort(-masked, axis=1, kind="stable")[:, :k_max]
        np.put_along_axis(top, nbr, True, axis=1)
        keep = (top & keep) | (top & keep).T
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(keep))}


@pytest.fixture(scope="session")
def resnet20():
    from mrp_gpu.models import create_model

    torch.manual_seed(0)
    return create_model("resnet20")


@pytest.fixture(scope="session")
def resnet20_groups(resnet20):
    from mrp_gpu.dependency.groups import build_groups

    return build_groups(resnet20, (3, 32, 32))


@pytest.fixture(scope="session")
def demo():
    """The shipped, trained demo (ResNet-20 on Fashion-MNIST): random weights show no redundancy."""
    from mrp_gpu.models import create_model

    return create_model("demo")


@pytest.fixture(scope="session")
def demo_groups(demo):
    from mrp_gpu.dependency.groups import build_groups

    return build_groups(demo, (1, 28, 28))


@pytest.fixture(scope="session")
def calib():
    from mrp_gpu.dependency.groups import example_input

    return example_input((1, 28, 28), batch=16)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRP_GPU_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_imagefolder(root, classes=2, per_class=4, size=36, seed=0):
    """A tiny ImageFolder dataset (ROOT/train/CLASS/*.png, ROOT/val/...) of coloured noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3), np.uint8) + np.uint8(60 * c)
                img = np.clip(base + rng.integers(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root
