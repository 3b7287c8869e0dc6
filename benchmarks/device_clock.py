"""Timing on any device: GPUs run asynchronously, so a reading of the clock first waits for the device's queued
work; and the name of what was timed."""

from __future__ import annotations

import platform
import time

import torch


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def machine(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def result_name(name: str, device: torch.device) -> str:
    """The file name of a benchmark's results: a GPU's get their own, beside the CPU's."""
    return name if device.type == "cpu" else f"{name}-{device.type}"
