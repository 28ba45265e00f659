from typing import Any, Mapping, Optional, Sequence

from .profile import Profile
from .rule import Rule

class RowReader:
    columns: tuple
    def __init__(self, columns: Sequence[str], *, listeners: Optional[Mapping[str, Any]] = ...,
                 defaults: Optional[Profile] = ...) -> None: ...
    def __call__(self, values: Sequence[Any]) -> Rule: ...
