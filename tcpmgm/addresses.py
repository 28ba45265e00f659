"""``normalize(value, argument)``: the compiled parser, or its pure twin when extensions are off."""

from ._extensions import pick

__all__ = ["normalize", "COMPILED"]

normalize, COMPILED = pick("._addr:normalize", "._addr_py:normalize")
