"""``normalize(value, argument)``: the compiled parser, or its pure twin when extensions are off."""

from typing import TYPE_CHECKING

from .._extensions import NO_EXTENSIONS, not_built

__all__ = ["COMPILED", "normalize"]

COMPILED = False
if TYPE_CHECKING:
    # The checker sees the compiled one (its stub, _addr.pyi); the pure twin has the same signature.
    from ._addr import normalize
else:
    if not NO_EXTENSIONS:
        try:
            from ._addr import normalize

            COMPILED = True
        except ImportError:  # pragma: no cover - only in an unbuilt source tree
            not_built("tcpmgm.matching._addr", "tcpmgm.matching._addr_py")
    if not COMPILED:
        from ._addr_py import normalize
