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

    def absorb(self, inner: Stopwatch, within: str) -> None:
        """Take the laps ``inner`` recorded during this watch's lap ``within`` as laps of their
        own, and leave ``within`` only the rest of its time."""
        for name, seconds in inner.laps.items():
            self.laps[within] -= seconds
            self.laps[name] = self.laps.get(name, 0.0) + seconds
