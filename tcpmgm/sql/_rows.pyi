from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from typing_extensions import disjoint_base

from ..matching._matcher import RuleRecords
from ..model.errors import RuleError, RuleWarning
from ..model.profile import Profile
from ..model.rule import Rule

# An extension type: its C layout rules it out as one of several bases (PEP 800).
@disjoint_base
class RowReader:
    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def not_null(self) -> frozenset[str]: ...
    def __init__(
        self,
        columns: Sequence[str],
        *,
        listeners: Mapping[str, Any] | None = ...,
        defaults: Profile | None = ...,
        not_null: Iterable[str] = ...,
    ) -> None: ...
    def __call__(self, values: Sequence[Any]) -> Rule: ...
    def read_batch(
        self,
        batch: Iterable[Sequence[Any]],
        records: RuleRecords,
        rejected: list[RuleError],
        warnings: list[RuleWarning],
    ) -> None: ...
