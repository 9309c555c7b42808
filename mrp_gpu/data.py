"""Datasets from local files: Fashion-MNIST, CIFAR-10/100, ``imagefolder`` (ImageNet layout).

Nothing is downloaded. Fashion-MNIST is read by torchvision's loader from a root
holding ``FashionMNIST/raw/``; the Debian package ``dataset-fashion-mnist`` ships
the four ``.gz`` files in ``/usr/share/datasets/fashion-mnist``, which are
decompressed once into a cache directory. Images are converted to the model's
input shape (channels and side), so one dataset serves every zoo model.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError
from .io import atomic_write_bytes

__all__ = ["DATASETS", "fashion_mnist_available", "get_dataset", "make_loader", "calibration_batch", "num_classes",
           "DEBIAN_FASHION_MNIST"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# name: (native channels, native side, classes, mean, std)
DATASETS = {
    "fashion-mnist": (1, 28, 10, (0.2860,), (0.3530,)),
    "cifar10": (3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": (3, 224, 0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # classes: the folders
}


def num_classes(name: str, root: str | Path | None = None) -> int:
    """Classes of a dataset (for ``imagefolder``: the sub-folders of ``ROOT/train``)."""
    _check(name)
    if name == "imagefolder":
        train = Path(root or ".") / "train"
        if not train.is_dir():
            raise DataError(f"ImageFolder layout expected: {train} is missing (ROOT/train/CLASS/*.jpg, ROOT/val/...)")
        return sum(1 for p in train.iterdir() if p.is_dir())
    return DATASETS[name][2]


def _check(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _cache_dir() -> Path:
    return Path(os.environ.get("MRP_GPU_CACHE", Path.home() / ".cache" / "mrp_gpu"))


def fashion_mnist_available(root: str | Path | None = None) -> bool:
    """True when Fashion-MNIST can be read from ``root`` (or the Debian package's place)."""
    try:
        _fashion_mnist_root(root)
        return True
    except DataError:
        return False


def _fashion_mnist_root(root: str | Path | None) -> Path:
    """A root with ``FashionMNIST/raw/`` decompressed, preparing it from .gz files if needed."""
    candidates = [Path(root)] if root else [DEBIAN_FASHION_MNIST]
    for base in candidates:
        raw = base / "FashionMNIST" / "raw"
        if all((raw / f).is_file() for f in _FMNIST_FILES):
            return base
        for src in (base, raw):
            if all((src / f"{f}.gz").is_file() for f in _FMNIST_FILES):
                out = _cache_dir() / "fashion-mnist"
                dest = out / "FashionMNIST" / "raw"
                for f in _FMNIST_FILES:
                    if not (dest / f).is_file():
                        try:
                            data = gzip.decompress((src / f"{f}.gz").read_bytes())
                        except (OSError, EOFError) as e:
                            raise DataError(f"cannot decompress {src / (f + '.gz')}: {e}") from None
                        atomic_write_bytes(dest / f, data)
                return out
    where = str(candidates[0])
    raise DataError(
        f"Fashion-MNIST not found in {where!r}: expected the four idx files (or their .gz) there or under "
        f"FashionMNIST/raw/. Install them with `sudo apt-get install dataset-fashion-mnist` "
        f"(files land in {DEBIAN_FASHION_MNIST}) or pass --data-root.")


def _transform(name: str, train: bool, input_size, augment: bool):
    from torchvision import transforms as T

    c_native, side, _, mean, std = DATASETS[name]
    c, h, w = input_size
    steps = []
    if name == "imagefolder":
        steps += [T.RandomResizedCrop((h, w)), T.RandomHorizontalFlip()] if (train and augment) else \
            [T.Resize(int(h * 256 / 224)), T.CenterCrop((h, w))]
    else:
        if (h, w) != (side, side):
            steps.append(T.Resize((h, w)))
        if train and augment:
            steps += [T.RandomCrop((h, w), padding=max(2, h // 16)), T.RandomHorizontalFlip()]
    if c != c_native:
        if c_native == 1:
            steps.append(T.Grayscale(num_output_channels=c))
        elif c == 1:
            steps.append(T.Grayscale(num_output_channels=1))
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        else:
            raise DataError(f"{name} has {c_native} channels; the model wants {c}")
    if len(mean) != c:
        mean, std = (mean[0],) * c, (std[0],) * c
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def get_dataset(name: str, *, train: bool, input_size, root: str | Path | None = None,
                augment: bool = True) -> Dataset:
    """The train or test split of ``name``, transformed to ``input_size`` (C, H, W)."""
    import torchvision.datasets as D

    _check(name)
    tf = _transform(name, train, input_size, augment)
    if name == "fashion-mnist":
        return D.FashionMNIST(str(_fashion_mnist_root(root)), train=train, transform=tf, download=False)
    if root is None:
        raise DataError(f"{name} needs --data-root (a local copy; nothing is downloaded)")
    root = Path(root)
    try:
        if name in ("cifar10", "cifar100"):
            cls = D.CIFAR10 if name == "cifar10" else D.CIFAR100
            return cls(str(root), train=train, transform=tf, download=False)
        split = root / ("train" if train else "val")
        if not split.is_dir():
            raise DataError(f"ImageFolder layout expected: {split} is missing (ROOT/train/CLASS/*.jpg, ROOT/val/...)")
        return D.ImageFolder(str(split), transform=tf)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"{name} not found under {str(root)!r}: {e}. Download it on a machine with internet "
                        f"(torchvision.datasets.{name.upper()}(root, download=True)) and copy it here.") from None


def make_loader(dataset: Dataset, *, batch_size: int, train: bool, workers: int = 2,
                sampler=None, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, drop_last=train, generator=g,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def calibration_batch(name: str, input_size, *, n: int = 256, root=None, seed: int = 0, labels: bool = False):
    """``n`` training images (no augmentation), a fixed random subset for a given seed;
    with ``labels=True``, ``(images, labels)`` (the same images, for criteria that take a loss).

    Training images, so that the test set stays unseen by the pruner.
    """
    ds = get_dataset(name, train=True, input_size=input_size, root=root, augment=False)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    samples = [ds[i] for i in idx.tolist()]
    images = torch.stack([x for x, _ in samples])
    return (images, torch.tensor([int(y) for _, y in samples])) if labels else images
