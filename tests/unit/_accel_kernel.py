"""A kernel for tests/unit/test_accel.py (numba caches only functions defined in a file)."""

from agent import accel


def total_py(a):
    s = 0.0
    for v in a:
        s += v
    return s


total = accel.compiled(total_py, "float64(float64[::1])")
