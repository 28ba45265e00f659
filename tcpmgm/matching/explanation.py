"""What ``explain`` answers, for both matchers: the winner and why each other match lost."""

from __future__ import annotations

from typing import NamedTuple

from ..model.key import key_difference
from ..model.profile import Profile, format_attrs
from ..model.rule import Rule
from ..model.text import aligned

__all__ = ["Explanation", "explanation"]


class Explanation(NamedTuple):
    """What ``explain`` found: the winner (``None``: default profile), its profile,
    and every matching rule in key order with the reason it lost."""

    winner: Rule | None
    profile: Profile
    matches: tuple[tuple[Rule, str], ...]

    def summary(self) -> str:
        """The winner on one line, then the profile's attributes as an aligned table."""
        head = f"rule {self.winner.describe()}" if self.winner else "rule 0: no rule matches (default profile)"
        values = [
            (name, (format_attrs(value) or "-") if name == "attrs" else int(value))
            for name, value in self.profile.values().items()
        ]
        return f"{head}\n{aligned([('attribute', 'value'), *values])}"

    def __str__(self) -> str:
        """:meth:`summary`, then each matching rule in key order with why it lost
        (what ``tcpmgm match --explain`` prints)."""
        if not self.matches:
            return self.summary()
        lines = [self.summary(), "", "matching rules, best first:"]
        lines += [f"{rule.describe()}: {reason}" for rule, reason in self.matches]
        return "\n".join(lines)


def explanation(matches: list[Rule], default: Profile) -> Explanation:
    """The :class:`Explanation` for ``matches``, the matching rules in key order."""
    if not matches:
        return Explanation(None, default, ())
    winner = matches[0]
    reasons = tuple((rule, "winner" if rule is winner else key_difference(rule, winner)) for rule in matches)
    return Explanation(winner, winner.profile, reasons)
