"""Turn what parsers carved into the shared records (FileRecord, EmailRecord), storing the
bytes in the artifact store on the way."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from pcapwire.extract import mime
from pcapwire.extract.artifacts import ArtifactStore, StoredArtifact, sanitize_filename
from pcapwire.extract.buffer import CarvedEmail, CarvedFile
from pcapwire.extract.httpfiles import hashes
from pcapwire.records import EmailRecord, FileRecord, FlowKey

log = logging.getLogger(__name__)


class StoredFile(NamedTuple):
    """What :meth:`RecordMaker.store_file` did: the artifact, and the libmagic MIME type
    of the body as transferred when the record carries that form's hashes."""

    artifact: StoredArtifact
    transferred_mime: str = ""


def record_id(prefix: str, flow: FlowKey, ts: float, seq: int, sha256: str) -> str:
    """Stable id: the same capture carved twice gives the same ids."""
    key = json.dumps([flow.to_dict(), round(ts, 6), seq, sha256], sort_keys=True)
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:20]


class RecordMaker:
    """Stores carved bytes and makes the records. The work comes in two steps so that a
    caller may run the first elsewhere (a worker thread; see :class:`~.carve.Carver`):

    * :meth:`store_file` / :meth:`store_email` -- hashing, libmagic and writing the bytes
      (thread-safe: only the content-addressed store is touched, and it is idempotent);
    * :meth:`file_record` / :meth:`email_records` -- record ids (a sequence number in
      carving order), sightings, the records; called in carving order.

    :meth:`file` and :meth:`email` do both at once. Sightings go to
    ``store.add_sighting`` as the records are made, or to ``sightings`` when given (a
    caller that writes them elsewhere, in the same order).
    """

    def __init__(self, store: ArtifactStore,
                 sightings: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.seq = 0
        self.add_sighting = sightings or store.add_sighting

    # ---- both steps ----------------------------------------------------------------
    def file(self, carved: CarvedFile, flow: FlowKey) -> FileRecord:
        return self.file_record(carved, flow, self.store_file(carved))

    def email(self, carved: CarvedEmail, flow: FlowKey) -> tuple[EmailRecord, list[FileRecord]]:
        parsed = mime.parse_message(carved.data)
        return self.email_records(carved, flow, parsed, self.store_email(carved, parsed))

    # ---- step 1: the bytes ---------------------------------------------------------
    def store_file(self, carved: CarvedFile) -> StoredFile:
        art = self.store.put(carved.data)
        transferred_mime = ""
        if carved.transferred is not None and "transferred" in carved.extra:
            transferred_mime, _ = self.store.identify(carved.transferred, describe=False)
        return StoredFile(art, transferred_mime)

    def store_email(self, carved: CarvedEmail, parsed: mime.ParsedMessage
                    ) -> list[StoredArtifact]:
        """The message (``.eml``), then every non-empty leaf of ``parsed``."""
        return [self.store.put(carved.data, suffix=".eml"),
                *(self.store.put(leaf.data) for leaf in parsed.leaves if leaf.data)]

    # ---- step 2: the records -------------------------------------------------------
    def file_record(self, carved: CarvedFile, flow: FlowKey, stored: StoredFile) -> FileRecord:
        flow = carved.flow or flow
        art = stored.artifact
        self.seq += 1
        extra = dict(carved.extra)
        if carved.transferred is not None and "transferred" in extra:
            extra["transferred"] = dict(extra["transferred"], mime_type=stored.transferred_mime)
        if carved.filename:
            extra["safe_filename"] = sanitize_filename(carved.filename)
        rec = FileRecord(
            id=record_id("f-", flow, carved.ts, self.seq, art.sha256), sha256=art.sha256,
            md5=art.md5, sha1=art.sha1, size=art.size, path=art.path, flow=flow,
            ts=carved.ts, protocol=carved.protocol, direction=carved.direction,
            mime_type=art.mime_type, magic=art.magic, filename=carved.filename,
            incomplete=carved.incomplete, missing_ranges=list(carved.missing_ranges),
            extra=extra)
        self.add_sighting(art.path, {
            "file_id": rec.id, "filename": carved.filename, "protocol": carved.protocol,
            "direction": carved.direction, "flow": flow.to_dict(), "ts": carved.ts,
            "incomplete": carved.incomplete})
        return rec

    def email_records(self, carved: CarvedEmail, flow: FlowKey, parsed: mime.ParsedMessage,
                      stored: list[StoredArtifact]) -> tuple[EmailRecord, list[FileRecord]]:
        """``stored`` is what :meth:`store_email` returned for ``carved`` and ``parsed``."""
        art, leaf_arts = stored[0], iter(stored[1:])
        self.seq += 1
        eid = record_id("e-", flow, carved.ts, self.seq, art.sha256)
        # Files carried by the message: every non-empty leaf (bodies too, as Zeek does);
        # attachments are the leaves with a filename or an attachment disposition.
        direction = "orig" if carved.protocol == "smtp" or \
            carved.extra.get("command") == "APPEND" else "resp"
        files: list[FileRecord] = []
        attachments: list[dict[str, Any]] = []
        for leaf in parsed.leaves:
            if not leaf.data:
                continue
            extra: dict[str, Any] = {
                "email_id": eid, "mime_entity": leaf.entity, "mime_role": leaf.role,
                "declared_mime_type": leaf.content_type,
                "transfer_encoding": leaf.transfer_encoding,
                "disposition": leaf.disposition}
            if leaf.zeek_data is not None and leaf.zeek_data != leaf.data:
                # What Zeek's MIME analyzer hashes for quoted-printable parts.
                extra["zeek_hashes"] = hashes(leaf.zeek_data)
            part = CarvedFile(data=leaf.data, protocol=carved.protocol, direction=direction,
                              ts=carved.ts, filename=leaf.filename,
                              incomplete=carved.incomplete, extra=extra)
            rec = self.file_record(part, flow, StoredFile(next(leaf_arts)))
            files.append(rec)
            if leaf.is_attachment:
                attachments.append({"file_id": rec.id, "filename": leaf.filename,
                                    "sha256": rec.sha256, "size": rec.size,
                                    "mime_type": rec.mime_type,
                                    "disposition": leaf.disposition or "attachment"})
        to = [a for v in parsed.header_all("to") for a in mime.split_addresses(v)]
        cc = [a for v in parsed.header_all("cc") for a in mime.split_addresses(v)]
        extra = dict(carved.extra)
        extra.update({
            "to_addresses": mime.bare_addresses(parsed.header_all("to")),
            "cc_addresses": mime.bare_addresses(parsed.header_all("cc")),
            "from_address": next(iter(mime.bare_addresses(parsed.header_all("from"))), ""),
            "reply_to": parsed.header("reply-to"), "in_reply_to": parsed.header("in-reply-to"),
            "user_agent": parsed.header("user-agent") or parsed.header("x-mailer"),
            "attachment_details": attachments, "file_ids": [f.id for f in files]})
        if parsed.errors:
            extra["mime_errors"] = parsed.errors
        if parsed.skipped_parts:
            extra["mime_skipped_parts"] = parsed.skipped_parts
        rec = EmailRecord(
            id=eid, path=art.path, flow=flow, ts=carved.ts, protocol=carved.protocol,
            mail_from=carved.mail_from, rcpt_to=list(carved.rcpt_to),
            from_=parsed.header("from"), to=to, cc=cc, subject=parsed.header("subject"),
            date=parsed.header("date"), message_id=parsed.header("message-id"),
            attachments=[a["file_id"] for a in attachments], extra=extra,
            sha256=art.sha256, size=art.size, text_body=parsed.text_body("plain"),
            html_body=parsed.text_body("html"), incomplete=carved.incomplete,
            missing_ranges=list(carved.missing_ranges))
        self.add_sighting(art.path, {
            "email_id": eid, "protocol": carved.protocol, "flow": flow.to_dict(),
            "ts": carved.ts})
        return rec, files
