"""Prometheus metrics of a :class:`~tcpmgm.service.manager.TcpMgm` (optional extra ``metrics``).

:class:`Collector` reads the manager, its rule hits and the process-wide
:mod:`~tcpmgm.service.events` when it is scraped, and at no other time: a
lookup does no work for monitoring beyond the hit count it keeps anyway.
The admin endpoint serves it at ``/metrics``; :func:`registry` gives one for
any other exposition (``prometheus_client.start_http_server``, a web app).
The metrics and their meaning: docs/operations.md#metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _PrometheusCollector
from prometheus_client.registry import CollectorRegistry

from ..model.errors import TcpMgmError
from .events import Event, snapshot
from .manager import TcpMgm

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LABEL",
    "Collector",
    "MetricsConfigError",
    "registry",
    "scraper",
]

# The text exposition format that generate_latest writes, the one every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LABEL = "default"  # the rule label of lookups that no rule matched (the default profile, key 0)

_EVENT_HELP = {
    Event.NO_NEW_CONN_REFUSED: "Connects refused because the winning rule sets no_new_conn",
    Event.SLOW_SEND: "Sends that took longer than the winning rule's send_threshold",
    Event.IDLE_CLOSE: "Connections closed after con_lifetime without a read or a write",
    Event.MESSAGE_TIMEOUT_CLOSE: "Connections closed because a message did not complete within msg_read_timeout",
    Event.CHUNK_LIMIT_CLOSE: "Connections closed because a message took more reads than max_msg_chunks",
}


class MetricsConfigError(TcpMgmError, ValueError):
    """The metrics were configured with a value they cannot work with."""


class Collector(_PrometheusCollector):
    """The metrics of ``mgr``, read at each scrape; per-rule hits for the ``top_rules`` rules with the most
    (the admin endpoint's cap, ``Limits.metrics_rules``, is 50).

    Every counter only grows between two reloads (docs/operations.md#metrics):
    each ``tcpmgm_rule_hits_total`` series is one rule's own count, present
    while the rule is among the top N; the hits of the rules outside it are
    the gauge ``tcpmgm_rule_hits_other``: a rule that leaves the top N brings
    its whole count into that sum at once, an increase no lookup made, which
    a counter must not show.  A table of 100,000 rules makes a
    scrape of at most ``top_rules + 2`` hit samples, not 100,000 series, and
    the matcher picks them without a dict of every rule (``Matcher.top_hits``).
    """

    def __init__(self, mgr: TcpMgm, *, top_rules: int) -> None:
        if isinstance(top_rules, bool) or not isinstance(top_rules, int) or top_rules < 0:
            raise MetricsConfigError(f"top_rules must be an integer from 0, not {top_rules!r}")
        self.mgr = mgr
        self.top_rules = top_rules

    def collect(self) -> Iterator[Metric]:
        mgr = self.mgr
        yield CounterMetricFamily(
            "tcpmgm_reloads", "Successful reloads of the rules since the manager was made", value=mgr.reloads
        )
        yield CounterMetricFamily(
            "tcpmgm_reload_failures",
            "Reloads that failed and left the rules in service unchanged",
            value=mgr.failed_reloads,
        )
        matcher, since = mgr.service  # the rules, their counts and the start of those from one reload
        yield from self._last_reload(since)
        yield GaugeMetricFamily("tcpmgm_rules_in_service", "Rules in service", value=len(matcher))
        rule_hits = CounterMetricFamily(
            "tcpmgm_rule_hits",
            f"Lookups a rule won since the last reload, for the top {self.top_rules} rules by hits "
            f'and rule="{DEFAULT_LABEL}" for the default profile',
            labels=["rule"],
        )
        other = GaugeMetricFamily(
            "tcpmgm_rule_hits_other",
            "Lookups since the last reload won by the rules without a tcpmgm_rule_hits_total sample in this scrape",
        )
        # The per-rule counts before the lookups: lookups made meanwhile then land in other, which
        # cannot go below zero.  No hit samples when the manager does not count (count_hits=False).
        top = matcher.top_hits(self.top_rules)  # [] when not counting
        default = matcher.hits(0, 0).get(0)  # the default profile's count alone; None when not counting
        lookups = matcher.lookups
        if default is not None:
            rule_hits.add_metric([DEFAULT_LABEL], default)
            for rule, n in top:
                rule_hits.add_metric([str(rule)], n)
            other.add_metric([], lookups - default - sum(n for _, n in top))
        yield CounterMetricFamily(
            "tcpmgm_lookups", "Lookups answered since the last reload, counted also without hit counts", value=lookups
        )
        yield rule_hits
        yield other
        counts = snapshot()
        for event in Event:
            yield CounterMetricFamily(f"tcpmgm_{event.value}", _EVENT_HELP[event], value=counts[event])

    def _last_reload(self, since: float) -> Iterator[Metric]:
        """The last successful reload, which put the rules in service at ``since``; families without a
        sample before the first one."""
        report = self.mgr.last_report
        when = GaugeMetricFamily(
            "tcpmgm_last_reload_timestamp_seconds",
            "When the last successful reload put its rules in service (Unix time), the start of the hit counts",
            unit="seconds",
        )
        duration = GaugeMetricFamily(
            "tcpmgm_last_reload_duration_seconds", "How long the last successful reload took", unit="seconds"
        )
        loaded = GaugeMetricFamily("tcpmgm_last_reload_rows_loaded", "Rows the last successful reload loaded")
        rejected = GaugeMetricFamily("tcpmgm_last_reload_rows_rejected", "Rows the last successful reload rejected")
        if report is not None:
            when.add_metric([], since)
            duration.add_metric([], report.seconds)
            loaded.add_metric([], report.loaded)
            rejected.add_metric([], len(report.rejected))
        return iter((when, duration, loaded, rejected))


def registry(mgr: TcpMgm, *, top_rules: int) -> CollectorRegistry:
    """A registry holding nothing but the :class:`Collector` of ``mgr``."""
    held = CollectorRegistry(auto_describe=False)
    held.register(Collector(mgr, top_rules=top_rules))
    return held


def scraper(mgr: TcpMgm, *, top_rules: int) -> Callable[[], bytes]:
    """What answers a scrape of ``mgr``: the text exposition (:data:`CONTENT_TYPE`) of its metrics."""
    return functools.partial(generate_latest, registry(mgr, top_rules=top_rules))
