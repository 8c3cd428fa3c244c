"""The optional C kernel of the inline evasion guard (include/aiir/evasion/_guardk.c). Everything else is in
pyproject.toml. ``optional=True``: without a C compiler the install goes on and the guard uses its pure-Python
path, which gives the same results bit for bit (tests/evasion/test_guard_unit.py compares them)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("aiir.evasion._guardk", ["include/aiir/evasion/_guardk.c"], optional=True,
                             extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"])])
