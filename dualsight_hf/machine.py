"""What machine a measurement ran on, for training results, model cards and benchmarks."""

import os
import platform
import re
from pathlib import Path

import torch


def describe_machine() -> dict:
    """CPU model, core count, AMX / AVX512-BF16 support, GPU (if any), torch and Python versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "amx": "amx_tile" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def machine_line(machine: dict) -> str:
    """One line for a report: `2 cores of Intel(R) Xeon(R) ... (AMX), no GPU, torch 2.13.0`."""
    extras = ", ".join(name for name, present in (("AMX", machine.get("amx")),
                                                   ("AVX512-BF16", machine.get("avx512_bf16"))) if present)
    gpu = machine.get("gpu") or "no GPU"
    return f"{machine['cores']} cores of {machine['cpu']}" + (f" ({extras})" if extras else "") + \
        f", {gpu}, torch {machine['torch']}"


def machine_slug(machine: dict) -> str:
    """A file-name-safe name of the machine, e.g. `2-cores-of-amd-epyc-avx512-bf16-no-gpu` (one results file each)."""
    return re.sub(r"[^a-z0-9]+", "-", machine_line(machine).split(", torch")[0].lower().replace("(r)", "")).strip("-")
