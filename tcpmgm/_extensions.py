"""Whether to use the compiled modules, and picking one or its pure twin.

``TCPMGM_NO_EXTENSIONS`` set to anything but ``""``/``0`` forces the pure-Python
twins, as aio-libs packages do with their own variable.  A missing compiled
module (a source checkout that was never built) also falls back, with a log
line, so the library stays usable.
"""

import importlib
import logging
import os
from typing import Any, Tuple

NO_EXTENSIONS = os.environ.get("TCPMGM_NO_EXTENSIONS", "") not in ("", "0")


def pick(compiled: str, pure: str) -> Tuple[Any, bool]:
    """``(object, True)`` for ``compiled`` ("._module:name"), or ``(object, False)`` for ``pure``."""
    if not NO_EXTENSIONS:
        try:
            return _load(compiled), True
        except ImportError:  # pragma: no cover - only in an unbuilt source tree
            logging.getLogger(__package__).warning("%s is not built; using %s", compiled, pure)
    return _load(pure), False


def _load(where: str) -> Any:
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module, __package__), name)
