"""``normalize(value, argument)``: the compiled parser, or its pure twin when extensions are off."""

from typing import TYPE_CHECKING

from ._extensions import pick

__all__ = ["normalize", "COMPILED"]

if TYPE_CHECKING:
    # The checker sees the compiled one (its stub, _addr.pyi); the pure twin has the same signature.
    from ._addr import normalize
    COMPILED: bool
else:
    normalize, COMPILED = pick("._addr:normalize", "._addr_py:normalize")
