"""The ``hashlist`` analyzer: each carved file's MD5, SHA-1 and SHA-256 looked up in the
allow and deny lists of :mod:`pcapwire.hashlist`; one verdict per file.

=============  ===========================================  ==============================
outcome        when                                         severity (score)
=============  ===========================================  ==============================
known-bad      a deny list holds one of the file's digests  the list's (default critical,
                                                            95); the highest of several
known-good     an allow list does (and no deny list)        the list's (default info, 0)
unknown        no list does                                 info (0)
=============  ===========================================  ==============================

Verdicts: ``signature_id`` ``hashlist:<outcome>``, ``category`` the outcome, ``tags``
``hashlist``, the outcome and the lists' names; evidence: the file's hashes, name, size and
type, every match (list, kind, scope, severity, algorithm, hash, label) and, for known-bad,
the follow-up queries (:mod:`.followup`). ``verdicts`` chooses which outcomes give a
verdict (default: all three).

Routing: with ``forward``, the file records with those outcomes are emitted again (same
id; ``extra.hashlist`` = ``{verdict, severity, lists}``) for the steps whose ``input`` is
this step -- so ``forward: [unknown]`` sends only unknown files on to YARA and a sandbox,
and known-good files get no further work.

Which lists: ``databases`` when given; else the run's data directory's
``hashlists.sqlite`` and, for a tenant of
a server, the server's global lists (:func:`pcapwire.hashlist.databases_for`). With no
store at all every file is ``unknown`` (the step logs a warning). Files without hashes
(from a third-party producer) are hashed here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pcapwire.errors import AnalyzerError
from pcapwire.hashlist import VERDICTS, HashListError, HashListSet, Triage, parse_digest
from pcapwire.plugins.hashlist.followup import FollowUps
from pcapwire.records import FileRecord
from pcapwire.workflow import Analyzer, AnalyzerConfig, Session, StepContext, option
from pcapwire.workflow.confine import Confinement
from pcapwire.workflow.context import DATA_DIR_PLACEHOLDER, resolve_path

Outcome = Literal["known-good", "known-bad", "unknown"]
SIGNATURES = {"known-bad": "file hash on deny list {lists}",
              "known-good": "file hash on allow list {lists}",
              "unknown": "file hash on no list"}
HASH_BLOCK = 4 * 2**20
#: Seconds between checks for lists added while a run goes on (see
#: :attr:`pcapwire.hashlist.HashListStore.refresh_interval`).
REFRESH_INTERVAL = 1.0


@dataclass(frozen=True)
class HashlistConfig(AnalyzerConfig):
    databases: list[str] = option([], kind="glob",
                                  description="hash-list stores (hashlists.sqlite files) "
                                  "to consult, relative to the workflow file; {data_dir} is "
                                  "the run's data directory. Empty: the data directory's "
                                  "store and, for a tenant, the server's global lists")
    lists: list[str] = option([], kind="text",
                              description="consult only these lists (names); empty: all")
    verdicts: list[Outcome] = option(list(VERDICTS), description="outcomes that give a "
                                     "verdict")
    forward: list[Outcome] = option([], description="re-emit file records with these "
                                    "outcomes (extra.hashlist added) to the steps whose input "
                                    "is this step")
    follow_up: bool = option(True, description="known-bad: query the PCAP of every flow where "
                             "the hash was seen, recorded in the case history")
    follow_up_margin: float = option(300.0, minimum=0, maximum=86400, description="seconds "
                                     "around a sighting in which its flow is looked for")
    max_follow_ups: int = option(100, minimum=0, description="follow-up queries per run")


def _hash_file(path: str) -> tuple[str, str, str]:
    md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()  # noqa: S324
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            md5.update(block)
            sha1.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest()


class HashlistSession(Session[HashlistConfig]):
    """Per run: the open stores and the follow-up state (flows already queried)."""

    def __init__(self, ctx: StepContext[HashlistConfig]) -> None:
        super().__init__(ctx)
        self.lists: HashListSet | None = None
        self.follow: FollowUps | None = None

    @property
    def cfg(self) -> HashlistConfig:
        return self.ctx.config

    def _data_dir(self) -> Path | None:
        return Path(self.ctx.data_dir) if self.ctx.data_dir is not None else None

    async def start(self) -> None:
        cfg, data_dir = self.cfg, self._data_dir()
        if cfg.databases:
            paths = [resolve_path(p, self.ctx.base_dir, data_dir) for p in cfg.databases]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise AnalyzerError(f"hash-list store not found: {', '.join(missing)}")
            self.lists = HashListSet.open(paths, REFRESH_INTERVAL)
        elif data_dir is not None:
            self.lists = HashListSet.for_data_dir(data_dir, REFRESH_INTERVAL)
        else:
            self.lists = HashListSet([])
        known = await asyncio.to_thread(self.lists.lists)
        if cfg.lists:
            missing = sorted(set(cfg.lists) - {hl.name for hl in known})
            if missing:
                raise AnalyzerError(f"no hash list {', '.join(map(repr, missing))}; lists: "
                                    f"{', '.join(hl.name for hl in known) or 'none'}")
        if not known:
            self.ctx.log.warning("hashlist: no hash lists (data directory %s): every file is "
                                 "unknown; import lists with `pcapwire hashlist import`",
                                 data_dir)
        else:
            self.ctx.log.info("hashlist: %d lists, %d hashes", len(known),
                              sum(hl.total for hl in known))
        self.follow = FollowUps(self.ctx, self.ctx.run.case, cfg.follow_up_margin,
                                cfg.max_follow_ups)

    async def feed(self, record: Any) -> None:
        if not isinstance(record, FileRecord):
            raise AnalyzerError(f"hashlist takes file records, not {record.kind!r}")
        assert self.lists is not None and self.follow is not None
        cfg = self.cfg
        if not (record.md5 and record.sha1 and record.sha256):
            md5, sha1, sha256 = await asyncio.to_thread(_hash_file, record.path)
            record = dataclasses.replace(record, md5=md5, sha1=sha1, sha256=sha256)
        try:
            digests = [parse_digest(h) for h in (record.sha256, record.sha1, record.md5)]
        except ValueError as exc:
            raise AnalyzerError(f"file {record.id}: {exc}") from None
        try:
            triage = self.lists.triage(digests, cfg.lists or None)
        except HashListError as exc:
            raise AnalyzerError(str(exc)) from None
        follow_ups: list[Any] = []
        if triage.verdict == "known-bad" and cfg.follow_up:
            follow_ups = await self.follow.plan_and_run(record)
        if triage.verdict in cfg.verdicts:
            await self.ctx.emit(self._verdict(record, triage, follow_ups))
        if triage.verdict in cfg.forward:
            info = {"verdict": triage.verdict, "severity": triage.severity,
                    "lists": triage.lists}
            await self.ctx.emit(dataclasses.replace(record,
                                                    extra={**record.extra, "hashlist": info}))

    def _verdict(self, record: FileRecord, triage: Triage, follow_ups: list[Any]) -> Any:
        evidence: dict[str, Any] = {
            "verdict": triage.verdict, "sha256": record.sha256, "sha1": record.sha1,
            "md5": record.md5, "filename": record.filename, "size": record.size,
            "mime_type": record.mime_type, "matches": [m.to_dict() for m in triage.matches]}
        if triage.verdict == "known-bad":
            evidence["follow_up"] = [f.evidence() for f in follow_ups]
        quiet = triage.verdict != "known-bad" and triage.severity == "info"
        return self.ctx.verdict_for(
            record, severity=triage.severity, score=0 if quiet else None,
            signature_id=f"hashlist:{triage.verdict}",
            signature=SIGNATURES[triage.verdict].format(lists=", ".join(triage.lists)),
            category=triage.verdict, tags=["hashlist", triage.verdict, *triage.lists],
            evidence=evidence)

    async def aclose(self) -> None:
        if self.lists is not None:
            self.lists.close()


class HashlistAnalyzer(Analyzer[HashlistConfig]):
    name = "hashlist"
    input_kind = "file"
    outputs = ("verdict", "file")
    version = "1.0"
    description = ("Known-good / known-bad / unknown for carved files from allow and deny "
                   "hash lists (text, CSV, NSRL RDS); follow-up PCAP queries for known-bad")

    def check_config(self, config: HashlistConfig, base_dir: Path | None,
                     confinement: Confinement | None = None) -> list[str]:
        out = []
        for p in config.databases:
            if DATA_DIR_PLACEHOLDER in p:
                continue
            path = resolve_path(p, base_dir, None)
            if not path.is_file():
                out.append(f"databases: {path} does not exist (create it with `pcapwire "
                           "hashlist import`)")
        return out

    def open_session(self, ctx: StepContext[HashlistConfig]) -> Session[HashlistConfig]:
        return HashlistSession(ctx)
