"""All numba flags in one place.

``fastmath`` stays off: the kernel must equal the NumPy reference to the last
bit for the twin test, and reordering floating-point sums would break that.
``cache`` keeps the compiled kernel on disk between processes; set
``RECOVERY_NUMBA_CACHE=0`` to turn it off (e.g. on read-only installs).
"""

import os

NJIT = dict(
    cache=os.environ.get("RECOVERY_NUMBA_CACHE", "1") != "0",
    nogil=True,
    error_model="numpy",
    fastmath=False,
)
