"""Notifications of a trigger's new matches: webhooks and syslog (RFC 5424), every attempt
in the delivery log (the ``deliveries`` table of :mod:`.db`).

The matches table is the queue. The notifier (:class:`Notifier`, a thread with an event
loop of its own, never the API's) takes each trigger's matches above its ``notified_id``
and makes one ``pending`` delivery per target, in one transaction, then sends. Matching
never waits for it: the watch and the hunt only add matches and wake it. A target that
is slow or down holds at most :data:`PER_TARGET_CONCURRENCY` sends; its deliveries wait
in the table (a restart resumes them). When a target has :data:`PENDING_MAX` deliveries
pending, a new one is logged ``failed`` with ``last_error`` saying so (nothing else is
held back, and the log says which matches were not delivered).

Webhook: ``POST`` of a JSON body (:func:`webhook_body`: the trigger's name, id and
version, the match's rule key, 5-tuple, time, source and evidence, and pivots: the query
of its flow, its flow id, the trigger's and case's API paths) with the headers

- ``X-Pcapwire-Delivery``: the delivery id, the same on every attempt (drop repeats);
- ``X-Pcapwire-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Pcapwire-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the target's
  secret, of ``<timestamp>.<raw body>`` (only with a secret).

A receiver verifies: recompute the HMAC over the timestamp header, a ``.`` and the raw
body bytes as received; compare in constant time (``hmac.compare_digest``); reject a
timestamp more than :data:`MAX_SKEW_S` from its clock (a replayed request); drop a
delivery id it has seen. :func:`verify` does exactly that.

Retries: up to :data:`ATTEMPTS` attempts, waiting :data:`BASE_DELAY_S` doubled after each
failure, at most :data:`MAX_DELAY_S`. A 2xx is delivered; a connection error, a timeout,
408, 429 and 5xx are retried; any other status is failed at once. The secret is never
logged or stored outside the trigger's definition (the log names the target by its URL
without user information).

Syslog: one RFC 5424 message per match (:func:`syslog_message`), over UDP (one datagram,
RFC 5426) or TCP with octet-counting framing (``LEN SP MSG``, RFC 6587), a connection
per delivery; TCP connection errors are retried as webhooks are, a UDP send is final.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pcapwire.triggers.db import TriggerDB
from pcapwire.triggers.model import Target
from pcapwire.triggers.pivot import flow, iso, pivots

log = logging.getLogger(__name__)

#: Attempts at one delivery, the wait after the first failure (doubled after each) and
#: the longest wait.
ATTEMPTS = 6
BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0
#: One HTTP request or TCP connection may take this long.
TIMEOUT_S = 10.0
#: Statuses retried besides 5xx.
RETRY_STATUSES = (408, 429)
#: Sends in flight to one target; deliveries pending per target before new ones fail.
PER_TARGET_CONCURRENCY = 4
PENDING_MAX = 10_000
#: Matches turned into deliveries per look at a trigger.
BATCH = 500
#: Seconds between looks at the tables when nothing wakes the notifier.
RESCAN_S = 2.0
#: A receiver should reject a timestamp further than this from its clock.
MAX_SKEW_S = 300
SIGNATURE_HEADER = "X-Pcapwire-Signature"
TIMESTAMP_HEADER = "X-Pcapwire-Timestamp"
DELIVERY_HEADER = "X-Pcapwire-Delivery"
#: Syslog: facility local0 (16), severity warning (4); structured data ID (32473 is the
#: private enterprise number reserved for documentation, RFC 5612); longest UDP datagram
#: and longest structured data value (longer ones are cut, marked with "...").
SYSLOG_FACILITY = 16
SYSLOG_SEVERITY = 4
SD_ID = "pcapwire@32473"
SYSLOG_UDP_MAX = 2048
SD_VALUE_MAX = 512
BOM = "\ufeff"


def target_label(t: Target) -> str:
    """How the delivery log names a target: a webhook's URL without user information, a
    syslog target as ``syslog+<transport>://<address>``."""
    if t.type == "webhook":
        parts = urlsplit(t.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    return f"syslog+{t.transport}://{t.address}"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: Any, body: bytes, now: float | None = None) -> bool:
    """A receiver's check of a webhook request (``headers``: a case-insensitive mapping)."""
    ts, sig = headers.get(TIMESTAMP_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
    try:
        skew = abs((time.time() if now is None else now) - int(ts))
    except ValueError:
        return False
    return skew <= MAX_SKEW_S and hmac.compare_digest(signature(secret, ts, body), sig)


def webhook_body(delivery_id: int, trigger: dict[str, Any], match: dict[str, Any]
                 ) -> bytes:
    """The JSON body of a delivery (``trigger``: id, name, version)."""
    doc = {"type": "pcapwire.trigger.match", "delivery_id": delivery_id,
           "trigger": {"id": trigger["id"], "name": trigger["name"],
                       "version": trigger["version"]},
           "match": {"id": match["id"], "rule": match["rule"], "source": match["source"],
                     "flow": flow(match), "time": iso(match["ts"]), "ts": match["ts"],
                     "segment_id": match["segment_id"], "versions": match["versions"],
                     "evidence": match["evidence"]},
           "pivots": pivots(trigger["id"], trigger["name"], match)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sd_escape(value: str) -> str:
    """A PARAM-VALUE of RFC 5424 section 6.3.3: ``"``, ``\\`` and ``]`` escaped."""
    if len(value) > SD_VALUE_MAX:
        value = value[:SD_VALUE_MAX - 3] + "..."
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(trigger: dict[str, Any], match: dict[str, Any], *,
                   now: float | None = None, hostname: str | None = None,
                   procid: int | None = None) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME pcapwire PROCID match [pcapwire@32473 ...] MSG``."""
    f = flow(match)
    params = {"trigger": trigger["name"], "trigger_id": trigger["id"],
              "version": trigger["version"], "match_id": match["id"], "rule": match["rule"],
              "source": match["source"], "proto": f["proto"], "src_ip": f["src_ip"],
              "src_port": f["src_port"], "dest_ip": f["dest_ip"],
              "dest_port": f["dest_port"], "time": iso(match["ts"])}
    if match.get("flow_id") is not None:
        params["flow_id"] = match["flow_id"]
    sd = "[" + SD_ID + "".join(f' {k}="{sd_escape(str(v))}"' for k, v in params.items()) + "]"
    host = (hostname or socket.gethostname() or "-")[:255].replace(" ", "-")
    stamp = iso(time.time() if now is None else now)
    msg = (f"trigger {trigger['name']} matched {match['rule']}: {f['proto']} "
           f"{f['src_ip']}:{f['src_port']} -> {f['dest_ip']}:{f['dest_port']}")
    pri = SYSLOG_FACILITY * 8 + SYSLOG_SEVERITY
    line = (f"<{pri}>1 {stamp} {host} pcapwire {os.getpid() if procid is None else procid}"
            f" match {sd} {BOM}{msg}").encode()
    return line


class Failed(Exception):
    """An attempt failed: ``retry`` says whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool, http_status: int | None = None) -> None:
        super().__init__(message)
        self.retry, self.http_status = retry, http_status


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return float(min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1)))


async def send_webhook(session: Any, target: Target, delivery_id: int, body: bytes) -> int:
    """One attempt; the HTTP status, or :class:`Failed`."""
    import aiohttp

    ts = str(int(time.time()))
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: str(delivery_id),
               TIMESTAMP_HEADER: ts, "User-Agent": "pcapwire-trigger"}
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(target.secret, ts, body)
    try:
        async with session.post(target.url, data=body, headers=headers,
                                allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Failed(f"{type(exc).__name__}: {exc}"[:500], True) from None
    if 200 <= status < 300:
        return status
    raise Failed(f"HTTP {status}", status >= 500 or status in RETRY_STATUSES, status)


async def send_syslog(target: Target, message: bytes) -> None:
    host, _, port = target.address.rpartition(":")
    host = host.strip("[]")
    if target.transport == "udp":
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
            family, _t, _p, _c, addr = infos[0]
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(message[:SYSLOG_UDP_MAX], addr)
        except OSError as exc:
            raise Failed(f"{type(exc).__name__}: {exc}", False) from None
        return
    try:
        _r, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                            TIMEOUT_S)
        try:
            writer.write(str(len(message)).encode() + b" " + message)
            await asyncio.wait_for(writer.drain(), TIMEOUT_S)
        finally:
            writer.close()
            await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        raise Failed(f"{type(exc).__name__}: {exc}", True) from None


class Notifier:
    """Deliveries of one store's triggers, in a thread of its own (:meth:`start`,
    :meth:`stop`); :meth:`wake` after matches were added (from any thread)."""

    def __init__(self, root: Any, stop: threading.Event | None = None) -> None:
        self.root = root
        self.stop_event = stop or threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._inflight: set[int] = set()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pcapwire-notify", daemon=True)
        self._thread.start()
        self.ready.wait()

    def wake(self) -> None:
        loop, ev = self._loop, self._wake
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass  # closing

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import aiohttp

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.ready.set()
        tasks: set[asyncio.Task[None]] = set()
        db = TriggerDB(self.root)
        try:
            async with aiohttp.ClientSession() as session:
                while not self.stop_event.is_set():
                    self._wake.clear()
                    self.plan(db)
                    for row in self.pending(db):
                        task = asyncio.create_task(self._deliver(db, session, row))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    try:
                        await asyncio.wait_for(self._wake.wait(), RESCAN_S)
                    except TimeoutError:
                        pass
                for task in list(tasks):
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            db.close()

    # -- the delivery log -----------------------------------------------------------------
    def plan(self, db: TriggerDB) -> int:
        """New matches -> pending deliveries (one per target), each trigger's cursor moved
        in the same transaction; returns the deliveries made."""
        made = 0
        for trig in db.triggers():
            row = db.db.execute("SELECT notified_id FROM watch WHERE trigger_id=?",
                                (trig.id,)).fetchone()
            after = int(row[0]) if row else 0
            matches = db.matches(trig.id, after_id=after, limit=BATCH)
            if not matches:
                continue
            targets = [target_label(t) for t in trig.definition.notify] \
                if trig.state == "active" else []
            now = time.time()
            with db.transaction() as tx:
                for label in dict.fromkeys(targets):
                    pending = tx.execute("SELECT count(*) FROM deliveries WHERE target=? AND "
                                         "status='pending'", (label,)).fetchone()[0]
                    for m in matches:
                        full = pending >= PENDING_MAX
                        tx.execute("INSERT INTO deliveries (trigger_id, match_id, target, "
                                   "status, last_error, created) VALUES (?,?,?,?,?,?)",
                                   (trig.id, m["id"], label, "failed" if full else "pending",
                                    f"not sent: {PENDING_MAX} deliveries to this target are "
                                    "pending (PENDING_MAX)" if full else None, now))
                        pending += not full
                        made += 1
                tx.execute("UPDATE watch SET notified_id=? WHERE trigger_id=?",
                           (matches[-1]["id"], trig.id))
        return made

    def pending(self, db: TriggerDB) -> list[tuple[Any, ...]]:
        rows = db.db.execute("SELECT id, trigger_id, match_id, target, attempts FROM deliveries "
                             "WHERE status='pending' ORDER BY id LIMIT ?",
                             (BATCH,)).fetchall()
        out = [r for r in rows if r[0] not in self._inflight]
        self._inflight.update(r[0] for r in out)
        return out

    async def _deliver(self, db: TriggerDB, session: Any, row: tuple[Any, ...]) -> None:
        delivery_id, trigger_id, match_id, label, attempts = row
        slot = self._slots.setdefault(label, asyncio.Semaphore(PER_TARGET_CONCURRENCY))
        try:
            async with slot:
                await self._attempts(db, session, delivery_id, trigger_id, match_id, label,
                                     attempts)
        except Exception:
            log.exception("delivery %d to %s", delivery_id, label)
        finally:
            self._inflight.discard(delivery_id)

    async def _attempts(self, db: TriggerDB, session: Any, delivery_id: int,
                        trigger_id: int, match_id: int, label: str, attempts: int) -> None:
        trig = db.get(trigger_id)
        target = next((t for t in trig.definition.notify if target_label(t) == label), None)
        found = db.matches(trigger_id, after_id=match_id - 1, limit=1)
        if target is None or not found or found[0]["id"] != match_id:
            self._record(db, delivery_id, "failed", attempts, "the target or the match is no "
                         "longer in the trigger", None)
            return
        about = {"id": trig.id, "name": trig.name, "version": trig.version}
        while attempts < ATTEMPTS and not self.stop_event.is_set():
            attempts += 1
            status: int | None = None
            try:
                if target.type == "webhook":
                    status = await send_webhook(session, target, delivery_id,
                                                webhook_body(delivery_id, about, found[0]))
                else:
                    await send_syslog(target, syslog_message(about, found[0]))
            except Failed as exc:
                final = not exc.retry or attempts >= ATTEMPTS
                self._record(db, delivery_id, "failed" if final else "pending", attempts,
                             str(exc), exc.http_status)
                log.info("delivery %d to %s, attempt %d: %s%s", delivery_id, label, attempts,
                         exc, "" if final else f"; again in {backoff(attempts):g} s")
                if final:
                    return
                await asyncio.sleep(backoff(attempts))
                continue
            self._record(db, delivery_id, "delivered", attempts, None, status)
            return

    @staticmethod
    def _record(db: TriggerDB, delivery_id: int, status: str, attempts: int,
                error: str | None, http_status: int | None) -> None:
        db.db.execute("UPDATE deliveries SET status=?, attempts=?, last_error=?, "
                      "http_status=?, delivered=CASE WHEN ?='delivered' THEN ? ELSE NULL END "
                      "WHERE id=?", (status, attempts, error, http_status, status, time.time(),
                                     delivery_id))


def deliveries(db: TriggerDB, trigger_id: int) -> list[dict[str, Any]]:
    """A trigger's delivery log, oldest first."""
    keys = ("id", "match_id", "target", "status", "attempts", "last_error", "http_status",
            "created", "delivered")
    return [dict(zip(keys, r, strict=True)) for r in db.db.execute(
        f"SELECT {', '.join(keys)} FROM deliveries WHERE trigger_id=? ORDER BY id",
        (trigger_id,))]
