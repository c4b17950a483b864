"""Prometheus metrics of every tenant's recorder, served at ``GET /metrics`` by
``pcapwire serve --metrics-listen HOST:PORT``.

Protection: the metrics name tenants and their interfaces, so they are never served on
the API's port (where any tenant's token works, and anonymous callers get 401). They have
a listener of their own, off unless ``--metrics-listen`` is given, that serves nothing but
``/metrics``, without authentication, as Prometheus exporters do: bind it to loopback or to
the monitoring network only (``--metrics-listen 127.0.0.1:9750``).

At each scrape, a custom collector reads ``DATA_DIR/tenants/<tenant>/capture/status.json``
(:mod:`pcapwire.capture.status`: counts since the recorder started) and exposes, labelled
``tenant`` (and ``interface``, ``cause``):

- ``pcapwire_capture_up``: 1 while the recorder runs (its document says ``running`` and is
  at most :data:`.routes_capture.STALE_S` old), else 0 and nothing more for that tenant;
- ``pcapwire_capture_packets_total``, ``pcapwire_capture_bytes_total``: recorded;
- ``pcapwire_capture_drops_total{cause=kernel|interface|backlog}``: lost, by cause (they
  add up), and ``pcapwire_capture_disk_drops_total``: the part of ``backlog`` the disk
  refused;
- ``pcapwire_capture_segments``, ``pcapwire_capture_disk_bytes``,
  ``pcapwire_capture_disk_free_bytes``, ``pcapwire_capture_write_errors_total``;
- ``pcapwire_capture_queryable_latency_seconds``: a histogram of arrival to queryable
  (the recorder's cumulative buckets, ``+Inf`` its count), from the document as it is.

And from ``retention/state.json`` (:mod:`pcapwire.retention.state`, written by every
retention run of a store with a policy), recorder or not:

- ``pcapwire_retention_alarm``: 1 while usage is above the high watermark and nothing
  left may be deleted (only held, open or in-place data);
- ``pcapwire_retention_expired_segments_total``, ``pcapwire_retention_expired_bytes_total``:
  deleted by the policy so far.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from pcapwire.api.routes_capture import recorder_status
from pcapwire.retention.state import read_state
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
METRICS_PATH = "/metrics"
DROP_CAUSES = (("kernel", "kernel_drops"), ("interface", "if_drops"),
               ("backlog", "backlog_drops"))
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


class CaptureCollector(Collector):
    """Every tenant's recorder, read at each scrape."""

    def __init__(self, data_dir: Path) -> None:
        self.tenants = data_dir / "tenants"

    def statuses(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            roots = sorted(p for p in self.tenants.iterdir() if p.is_dir())
        except OSError:
            return
        now = time.time()
        for root in roots:
            doc = recorder_status(root, now)
            if doc is not None:
                yield root.name, doc

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pcapwire_capture_up", "1 while the tenant's recorder runs",
                               labels=["tenant"])
        packets = CounterMetricFamily("pcapwire_capture_packets", "packets recorded",
                                      labels=["tenant", "interface"])
        nbytes = CounterMetricFamily("pcapwire_capture_bytes", "packet bytes recorded",
                                     labels=["tenant", "interface"])
        drops = CounterMetricFamily("pcapwire_capture_drops", "packets lost, by cause",
                                    labels=["tenant", "interface", "cause"])
        disk_drops = CounterMetricFamily(
            "pcapwire_capture_disk_drops", "backlog drops the disk refused (part of "
            "cause=backlog)", labels=["tenant", "interface"])
        segments = GaugeMetricFamily("pcapwire_capture_segments", "segments written",
                                     labels=["tenant"])
        disk = GaugeMetricFamily("pcapwire_capture_disk_bytes", "bytes of the store's "
                                 "segments", labels=["tenant"])
        free = GaugeMetricFamily("pcapwire_capture_disk_free_bytes", "free bytes on the "
                                 "store's file system", labels=["tenant"])
        errors = CounterMetricFamily("pcapwire_capture_write_errors", "failed writes",
                                     labels=["tenant"])
        latency = HistogramMetricFamily(
            "pcapwire_capture_queryable_latency_seconds", "arrival to queryable",
            labels=["tenant"])
        for tenant, doc in self.statuses():
            up.add_metric([tenant], 1 if doc["recording"] else 0)
            if not doc["recording"]:
                continue
            for iface, row in sorted(doc.get("interfaces", {}).items()):
                packets.add_metric([tenant, iface], row.get("packets", 0))
                nbytes.add_metric([tenant, iface], row.get("bytes", 0))
                for cause, key in DROP_CAUSES:
                    drops.add_metric([tenant, iface, cause], row.get(key, 0))
                disk_drops.add_metric([tenant, iface], row.get("disk_drops", 0))
            segments.add_metric([tenant], doc.get("segments", 0))
            disk.add_metric([tenant], doc.get("disk_bytes", 0))
            free.add_metric([tenant], doc.get("disk_free_bytes", 0))
            errors.add_metric([tenant], doc.get("write_errors", 0))
            hist: Any = doc.get("latency_hist")
            if hist:
                _histogram(latency, tenant, hist)
        yield from (up, packets, nbytes, drops, disk_drops, segments, disk, free, errors,
                    latency)
        yield from self.retention()

    def retention(self) -> Iterator[Metric]:
        alarm = GaugeMetricFamily("pcapwire_retention_alarm", "1 while the store is above its "
                                  "high watermark with nothing left to delete",
                                  labels=["tenant"])
        segs = CounterMetricFamily("pcapwire_retention_expired_segments", "segments deleted "
                                   "by the retention policy", labels=["tenant"])
        nbytes = CounterMetricFamily("pcapwire_retention_expired_bytes", "bytes deleted by "
                                     "the retention policy", labels=["tenant"])
        try:
            roots = sorted(p for p in self.tenants.iterdir() if p.is_dir())
        except OSError:
            roots = []
        for root in roots:
            doc = read_state(root)
            if doc is None:
                continue
            expired = doc.get("expired") or {}
            alarm.add_metric([root.name], 1 if doc.get("alarm") else 0)
            segs.add_metric([root.name], expired.get("segments", 0))
            nbytes.add_metric([root.name], expired.get("bytes", 0))
        yield from (alarm, segs, nbytes)


def _histogram(family: HistogramMetricFamily, tenant: str, hist: Any) -> None:
    """The recorder's cumulative buckets as they are; its count is ``+Inf``."""
    try:
        buckets = [(_le(b), c) for b, c in zip(hist["buckets"], hist["counts"], strict=True)]
        family.add_metric([tenant], [*buckets, ("+Inf", hist["count"])], hist["sum"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("tenant %s: the latency histogram of its status.json is malformed (%s)",
                    tenant, exc)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``0.05``)."""
    return repr(float(bound))


async def serve_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_metrics_app(data_dir: Path) -> web.Application:
    """The metrics listener's application: ``GET /metrics`` and nothing else."""
    app = web.Application()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaptureCollector(Path(data_dir).resolve()))
    app[REGISTRY] = registry
    app.router.add_get(METRICS_PATH, serve_metrics)
    return app
