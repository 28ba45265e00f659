from collections.abc import Iterable
from typing import Any

from typing_extensions import disjoint_base

from tcpmgm.model.profile import Profile
from tcpmgm.model.rule import Rule

__all__ = ["LinearScanBaseline"]

# An extension type: its C layout rules it out as one of several bases (PEP 800).
@disjoint_base
class LinearScanBaseline:
    def __init__(self, rules: Iterable[Rule] = ..., *, default: Profile | None = ...) -> None: ...
    def lookup(
        self, proto: str | None, remote_ip: Any, remote_port: int = ..., local_ip: Any = ..., local_port: int = ...
    ) -> Profile: ...
