"""`make venv`'s last step: where the machine has a C compiler, the inline guard's optional C kernel must have been
built and speak this code's ABI. setup.py marks the extension optional (without a compiler the install goes on and
the guard runs its pure-Python path, same results), so a kernel that fails to compile would otherwise pass as a
warning in pip's quiet output, and only a slower guard (and skipped kernel tests) would show it.

    .venv/bin/python scripts/check_kernel.py     # exit 0: built, or no compiler here; 1: one line saying what to do
"""
from __future__ import annotations

import shutil
import sys
import sysconfig


def main() -> int:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        print(f"guard kernel: no C compiler ({cc}) here: the guard runs its pure-Python path (same results)")
        return 0
    from aiir.evasion import guard

    if guard._guardk is None:
        print("guard kernel: include/aiir/evasion/_guardk.c did not build although a C compiler is here; see why "
              "with `.venv/bin/python -m pip install --no-deps -e . -v 2>&1 | grep -B2 -A8 error`", file=sys.stderr)
        return 1
    if guard._KERNEL is None:
        print(f"guard kernel: the built extension speaks ABI {getattr(guard._guardk, 'ABI', None)}, this code "
              f"{guard.KERNEL_ABI} (a stale build): rebuild it with `.venv/bin/python -m pip install --no-deps -e .`",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
