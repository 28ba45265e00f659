from collections.abc import Iterable
from typing import Any

from tcpmgm.model.profile import Profile
from tcpmgm.model.rule import Rule

__all__ = ["LinearScanBaseline"]

class LinearScanBaseline:
    def __init__(self, rules: Iterable[Rule] = ..., *, default: Profile | None = ...) -> None: ...
    def lookup(
        self, proto: str | None, remote_ip: Any, remote_port: int = ..., local_ip: Any = ..., local_port: int = ...
    ) -> Profile: ...
