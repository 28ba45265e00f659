"""OpenSIPS compatibility: what real OpenSIPS does with a ``tcp_mgm`` table (docs/opensips.md)."""

from .compare import Connection, Difference, candidates, compare
from .order import OpenSIPSOrder, PathKey, compare_paths, merge_sort, path_key

__all__ = [
    "Connection",
    "Difference",
    "OpenSIPSOrder",
    "PathKey",
    "candidates",
    "compare",
    "compare_paths",
    "merge_sort",
    "path_key",
]
