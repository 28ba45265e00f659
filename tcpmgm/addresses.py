"""``normalize(value, argument)``: the compiled parser, or its pure twin when extensions are off."""

import logging

from ._extensions import NO_EXTENSIONS

__all__ = ["normalize", "COMPILED"]

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from ._addr import normalize
        COMPILED = True
    except ImportError:  # pragma: no cover - only in an unbuilt source tree
        logging.getLogger(__name__).warning("tcpmgm._addr is not built; using the pure-Python parser")
if not COMPILED:
    from ._addr_py import normalize
