"""Whether the optional C accelerator ``syncpool._speedups`` is used: one decision for every module that uses it.

It is built at install time wherever a C compiler is at hand (see setup.py). It is not used on free-threaded
builds (it relies on the GIL), nor when the environment variable ``SYNCPOOL_NO_SPEEDUPS`` is set to anything
non-empty; then syncpool runs its pure-Python paths, slower but with the same behaviour.
"""

from __future__ import annotations

import os
import sysconfig
from typing import Any

speedups: Any
if os.environ.get("SYNCPOOL_NO_SPEEDUPS") or sysconfig.get_config_var("Py_GIL_DISABLED"):
    speedups = None
else:
    try:
        from . import _speedups as speedups
    except ImportError:  # built without a C compiler
        speedups = None
