"""Turn what parsers carved into the shared records (FileRecord, EmailRecord), storing the
bytes in the artifact store on the way."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pcapwire.extract import mime
from pcapwire.extract.artifacts import ArtifactStore, sanitize_filename
from pcapwire.extract.buffer import CarvedEmail, CarvedFile
from pcapwire.extract.httpfiles import hashes
from pcapwire.records import EmailRecord, FileRecord, FlowKey

log = logging.getLogger(__name__)


def record_id(prefix: str, flow: FlowKey, ts: float, seq: int, sha256: str) -> str:
    """Stable id: the same capture carved twice gives the same ids."""
    key = json.dumps([flow.to_dict(), round(ts, 6), seq, sha256], sort_keys=True)
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:20]


class RecordMaker:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.seq = 0

    def file(self, carved: CarvedFile, flow: FlowKey) -> FileRecord:
        flow = carved.flow or flow
        art = self.store.put(carved.data)
        self.seq += 1
        extra = dict(carved.extra)
        if carved.transferred is not None and "transferred" in extra:
            mime_type, _ = self.store.identify(carved.transferred, describe=False)
            extra["transferred"] = dict(extra["transferred"], mime_type=mime_type)
        if carved.filename:
            extra["safe_filename"] = sanitize_filename(carved.filename)
        rec = FileRecord(
            id=record_id("f-", flow, carved.ts, self.seq, art.sha256), sha256=art.sha256,
            md5=art.md5, sha1=art.sha1, size=art.size, path=art.path, flow=flow,
            ts=carved.ts, protocol=carved.protocol, direction=carved.direction,
            mime_type=art.mime_type, magic=art.magic, filename=carved.filename,
            incomplete=carved.incomplete, missing_ranges=list(carved.missing_ranges),
            extra=extra)
        self.store.add_sighting(art.path, {
            "file_id": rec.id, "filename": carved.filename, "protocol": carved.protocol,
            "direction": carved.direction, "flow": flow.to_dict(), "ts": carved.ts,
            "incomplete": carved.incomplete})
        return rec

    def email(self, carved: CarvedEmail, flow: FlowKey) -> tuple[EmailRecord, list[FileRecord]]:
        art = self.store.put(carved.data, suffix=".eml")
        self.seq += 1
        eid = record_id("e-", flow, carved.ts, self.seq, art.sha256)
        parsed = mime.parse_message(carved.data)
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
            rec = self.file(part, flow)
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
        self.store.add_sighting(art.path, {
            "email_id": eid, "protocol": carved.protocol, "flow": flow.to_dict(),
            "ts": carved.ts})
        return rec, files
