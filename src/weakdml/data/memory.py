"""Refusing image tensors that cannot fit in memory before allocating them (an --input-size of 4000 would ask for
tens of GB and the machine would swap or kill the process instead of saying why)."""

from __future__ import annotations

import os
from pathlib import Path

from weakdml.errors import UserError


def available_memory() -> int | None:
    """Bytes a new allocation can get: Linux's MemAvailable (free plus reclaimable caches), else the free physical
    pages (os.sysconf), else None when the system says neither."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # "MemAvailable:  123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_image_memory(count: int, channels: int, height: int, width: int) -> None:
    """Refuse ``count`` uint8 images (C, H, W) that need more bytes than are available."""
    needed, available = count * channels * height * width, available_memory()
    if available is not None and needed > available:
        raise UserError(f"{count} images of {height} x {width} px with {channels} channel(s) need {needed / 2**30:.1f} "
                        f"GB of memory, but {available / 2**30:.1f} GB is available; lower --input-size")
