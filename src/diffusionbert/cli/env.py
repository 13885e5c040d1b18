"""``diffusionbert env``: what a bug report needs: versions, device, threads, backbone and data found or not."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "safetensors", "numpy")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env", help="print versions, device, threads and whether the backbone and data are found"
    )
    p.add_argument(
        "--data-dir",
        default="../shared/data",
        help="the data directory to look for (default: ../shared/data)",
    )
    p.set_defaults(func=run)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> None:
    import torch

    from .. import __version__
    from ..errors import CheckpointError
    from ..models import default_backbone_path
    from ..utils.runtime import default_device, machine_description

    rows = [("diffusionbert", __version__), ("python", f"{platform.python_version()} ({sys.executable})")]
    rows += [(name, _version(name)) for name in _PACKAGES]
    cuda = (
        f"{torch.cuda.device_count()} × {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
        if torch.cuda.is_available()
        else "none"
    )
    rows += [
        ("machine", machine_description()),
        ("default device", str(default_device())),
        ("CUDA devices", cuda),
        ("torch threads", f"{torch.get_num_threads()} of {os.cpu_count()} cores"),
    ]
    try:
        rows.append(("default backbone", f"{default_backbone_path()} (found)"))
    except CheckpointError as exc:
        rows.append(("default backbone", f"not found: {exc}"))
    data = Path(args.data_dir)
    found = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
    rows.append(("data", f"{data} ({'found: ' + ', '.join(found) if found else 'not found'})"))
    offline = [
        k for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(k, "0") not in ("", "0")
    ]
    rows.append(
        (
            "hub access",
            f"offline ({', '.join(offline)})" if offline else "allowed (hub dataset ids work online)",
        )
    )
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
