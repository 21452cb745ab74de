"""vitsim.pipelines.set_threads: torch and numba share libgomp, so setting one can silently undo the other."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numba
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import numpy as np, numba, torch
from vitsim.pipelines import set_threads
from hwsim.kernels.gemm import gemm
set_threads(1)
a = np.ones((2, 64, 64), np.int16)
gemm(a, a)   # a parallel numba kernel
print(torch.get_num_threads(), numba.get_num_threads())
"""


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs numba's default pool wider than one thread")
def test_set_threads_survives_numba_starting_and_running_a_kernel():
    """In a fresh interpreter (numba's OpenMP layer starts once per process): setting torch's count before numba's
    leaves torch on numba's default once the layer starts, so a timing or tuning run would use more threads than it
    says."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"], out.stdout + out.stderr
