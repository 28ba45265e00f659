from typing import Any, Iterable, List, Mapping, Optional, Sequence, Set

from .errors import RuleError, RuleWarning
from .profile import Profile
from .rule import Rule

class RowReader:
    columns: tuple
    not_null: frozenset
    def __init__(self, columns: Sequence[str], *, listeners: Optional[Mapping[str, Any]] = ...,
                 defaults: Optional[Profile] = ..., not_null: Iterable[str] = ...) -> None: ...
    def __call__(self, values: Sequence[Any]) -> Rule: ...
    def read_batch(self, batch: Iterable[Sequence[Any]], rules: List[Rule], rejected: List[RuleError],
                   warnings: List[RuleWarning], seen_ids: Set[int]) -> None: ...
