"""The machine a benchmark ran on, recorded with every result."""

from __future__ import annotations

import datetime
import os
import platform

import torch


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
