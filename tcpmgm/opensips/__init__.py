"""OpenSIPS compatibility: what real OpenSIPS does with a ``tcp_mgm`` table (docs/opensips.md)."""

from .comparison import Comparison, Connection, Difference, candidates, compare
from .order import OpenSIPSOrder, PathKey, compare_paths, merge_sort, path_key

__all__ = [
    "Comparison",
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
