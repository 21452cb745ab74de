"""Independent, deliberately simple int64 references for every hwsim kernel.

Written apart from ``hwsim.kernels`` from the formulas in the kernels' papers (not by copying the kernels), using numpy
int64 arrays and Python integers so that the tests can demand exact equality. Slow on purpose: no tiling, no numba.
"""
