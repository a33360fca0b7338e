"""Starting a Python child process that runs this copy of Hydra.

``python -m`` puts the current directory first on ``sys.path``, ahead of
``PYTHONPATH`` and the installed packages: started from a directory that holds
another ``hydra`` package (a second checkout, an older tree), a child would run
that code instead of the code of the process that started it. Children are
started with ``-P`` (no such entry, Python 3.11+) and with the directory this
package was imported from first on ``PYTHONPATH`` (the package may not be
installed, e.g. a checkout run with ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# The directory holding this ``hydra`` package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_command(module: str, *args: str) -> list[str]:
    """The command line running ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-P", "-m", module, *args]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with this package's root first
    on ``PYTHONPATH``."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, out.get("PYTHONPATH")]))
    return out
