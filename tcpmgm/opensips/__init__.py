"""OpenSIPS compatibility: what real OpenSIPS does with a ``tcp_mgm`` table (docs/opensips.md)."""

from .order import OpenSIPSOrder, PathKey, compare_paths, merge_sort, path_key

__all__ = ["OpenSIPSOrder", "PathKey", "compare_paths", "merge_sort", "path_key"]
