"""The machine a measurement names: read from this machine, said in one line, and a file-name-safe slug."""

import re

from dualsight_hf.machine import describe_machine, machine_line, machine_slug

EPYC = {"cpu": "AMD EPYC 9B14", "cores": 2, "amx": False, "avx512_bf16": True, "gpu": None, "torch": "2.13.0+cpu",
        "python": "3.11.7"}


def test_this_machine_is_described():
    machine = describe_machine()
    assert set(machine) == set(EPYC)
    assert machine["cores"] >= 1 and machine["cpu"] and machine["torch"] and machine["python"].count(".") == 2


def test_one_line_names_cores_cpu_extensions_gpu_and_torch():
    assert machine_line(EPYC) == "2 cores of AMD EPYC 9B14 (AVX512-BF16), no GPU, torch 2.13.0+cpu"
    xeon = {**EPYC, "cpu": "Intel(R) Xeon(R) Platinum 8488C", "amx": True, "gpu": "NVIDIA H100 80GB HBM3"}
    assert machine_line(xeon) == ("2 cores of Intel(R) Xeon(R) Platinum 8488C (AMX, AVX512-BF16), NVIDIA H100 80GB "
                                  "HBM3, torch 2.13.0+cpu")
    assert machine_line({**EPYC, "avx512_bf16": False}) == "2 cores of AMD EPYC 9B14, no GPU, torch 2.13.0+cpu"


def test_the_slug_is_safe_in_a_file_name_and_leaves_torch_out():
    assert machine_slug(EPYC) == "2-cores-of-amd-epyc-9b14-avx512-bf16-no-gpu"
    xeon = machine_slug({**EPYC, "cpu": "Intel(R) Xeon(R) Platinum 8488C", "torch": "2.14.0"})
    assert re.fullmatch(r"[a-z0-9-]+", xeon) and "torch" not in xeon and "(r)" not in xeon
