"""Devices a run can use, and the hardware class that names an arena.

Results measured on a wall-clock budget depend on the hardware, so the board keeps them apart by
hardware class: the GPU's name, or the CPU's model and the number of cores this process may use.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from harness.errors import HarnessError


def list_devices() -> list[str]:
    """`cuda:N` for every visible GPU, else `["cpu"]`."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def check_device(device: str) -> str:
    """The device, if this machine has it; a HarnessError naming the choices otherwise."""
    if device == "cpu":
        return device
    if device.startswith("cuda") and device in list_devices():
        return device
    raise HarnessError(f"device {device!r} is not available here; choose one of {', '.join(list_devices())}")


@cache
def hardware_class(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' for a GPU; 'AMD EPYC 9B14 x2' (model x usable cores) for the CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} x{len(os.sched_getaffinity(0))}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return os.uname().machine


SLOT = "#"  # cpu#2: the third slot of the CPU; a slot is a place for one run at a time


def device_of(slot: str) -> str:
    """The device a slot runs on: 'cuda:0#1' -> 'cuda:0', 'cpu' -> 'cpu'."""
    return slot.split(SLOT, 1)[0]


def slots(spec: str) -> list[str]:
    """Device slots from a list like 'cuda:0,cuda:1', 'cpu*4' or 'cpu,cpu': a device named more than
    once (or N times with *N) gets that many slots, each with its own lock, named 'cpu#0', 'cpu#1'..."""
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        device, _, times = item.partition("*")
        try:
            count = int(times) if times else 1
        except ValueError:
            raise HarnessError(f"device slots {item!r}: after * give a number of slots, like cpu*4") from None
        if count < 1:
            raise HarnessError(f"device slots {item!r}: at least one slot")
        names += [device.strip()] * count
    repeated = {name for name in names if names.count(name) > 1}
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in repeated:
            out.append(f"{name}{SLOT}{seen.setdefault(name, 0)}")
            seen[name] += 1
        else:
            out.append(name)
    return out
