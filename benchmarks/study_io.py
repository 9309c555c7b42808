"""What every study script shares: its command line, its stamp (command, date, machine) and
the atomic write of its JSON and the markdown page generated from it."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

from mrp_gpu.io import atomic_write_text


def parser(doc: str) -> argparse.ArgumentParser:
    """The script's parser, its docstring as help, with ``--out`` (the results folder)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results")
    return ap


def stamp(argv=None) -> dict:
    """``command`` (as typed, or ``argv`` when called from Python), ``date`` and ``machine``."""
    threads = torch.get_num_threads()
    return {"command": shlex.join(["python", *sys.argv] if argv is None else argv),
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {threads} thread{'s' if threads != 1 else ''}"}


def write(out: str | Path, stem: str, result: dict, markdown: Callable[[dict], str]) -> str:
    """Write ``stem.json`` and its page ``stem.md`` into ``out`` (each atomically); the page."""
    page = markdown(result)
    atomic_write_text(Path(out) / f"{stem}.json", json.dumps(result, indent=1))
    atomic_write_text(Path(out) / f"{stem}.md", page)
    return page
