"""Wall-clock timing that is honest on GPUs: synchronise before reading the clock."""

from __future__ import annotations

import contextlib
import time

import torch

__all__ = ["sync", "Stopwatch"]


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Named laps in seconds: ``with sw.lap("similarity"): ...``; ``sw.laps`` holds them."""

    def __init__(self, device="cpu"):
        self.device = device
        self.laps: dict[str, float] = {}

    @contextlib.contextmanager
    def lap(self, name: str):
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.laps[name] = self.laps.get(name, 0.0) + time.perf_counter() - t0
