import gzip
import struct

import numpy as np
import pytest
import torch

from mrp_gpu.data import calibration_batch, get_dataset, num_classes
from mrp_gpu.errors import DataError


def write_idx(dirpath, n=12, seed=0):
    """The four Fashion-MNIST idx files, gzipped, with ``n`` random images each."""
    rng = np.random.default_rng(seed)
    dirpath.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (dirpath / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()))
        (dirpath / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 2049, n) + labels.tobytes()))


def test_fashion_mnist_from_gz_files(tmp_path, tmp_cache):
    write_idx(tmp_path / "fm")
    ds = get_dataset("fashion-mnist", train=True, input_size=(1, 28, 28), root=tmp_path / "fm")
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and 0 <= y < 10 and len(ds) == 12
    assert (tmp_cache / "fashion-mnist" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    # resized and made three-channel for models that want it
    x3, _ = get_dataset("fashion-mnist", train=False, input_size=(3, 32, 32), root=tmp_path / "fm")[0]
    assert x3.shape == (3, 32, 32)
    batch = calibration_batch("fashion-mnist", (1, 28, 28), n=5, root=tmp_path / "fm")
    assert batch.shape == (5, 1, 28, 28)
    images, labels = calibration_batch("fashion-mnist", (1, 28, 28), n=5, root=tmp_path / "fm", labels=True)
    assert torch.equal(images, batch) and labels.shape == (5,) and labels.dtype == torch.int64
    chosen = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:5].tolist()
    assert [ds[i][1] for i in chosen] == labels.tolist()


def test_missing_data_says_what_to_install(tmp_path):
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist"):
        get_dataset("fashion-mnist", train=True, input_size=(1, 28, 28), root=tmp_path / "nothing")
    with pytest.raises(DataError, match="needs --data-root"):
        get_dataset("cifar10", train=True, input_size=(3, 32, 32))
    with pytest.raises(DataError, match="cifar10 not found under"):
        get_dataset("cifar10", train=True, input_size=(3, 32, 32), root=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        get_dataset("mnist-ish", train=True, input_size=(1, 28, 28))
    with pytest.raises(DataError, match="train is missing"):
        num_classes("imagefolder", tmp_path)


def test_imagefolder(tmp_path):
    from conftest import write_imagefolder

    write_imagefolder(tmp_path, classes=3, per_class=2)
    assert num_classes("imagefolder", tmp_path) == 3
    ds = get_dataset("imagefolder", train=False, input_size=(3, 32, 32), root=tmp_path)
    assert len(ds) == 6 and ds[0][0].shape == (3, 32, 32)
    assert isinstance(ds[0][0], torch.Tensor)
