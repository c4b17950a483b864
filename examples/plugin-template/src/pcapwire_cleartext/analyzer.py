"""The ``cleartext.logins`` analyzer: one verdict per clear-text login found in a client's
reassembled TCP stream (see :mod:`pcapwire_cleartext.logins` for what is recognised).

The analyzer contract (``pcapwire.workflow.analyzer``) in brief: a name (the ``uses:``
value), the input kind(s), a version, a config dataclass that is the schema of the
step's ``with:`` (unknown keys are errors) -- ``Analyzer[CleartextConfig]`` makes it the
analyzer's ``Config`` and types ``ctx.config`` -- and ``analyze(record, ctx)``, an async
generator yielding verdicts. The engine owns timeouts, errors and concurrency; keep no
per-record state on ``self``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from pcapwire.records import StreamRecord, Verdict
from pcapwire.workflow import Analyzer, AnalyzerConfig, StepContext, option

from pcapwire_cleartext.logins import MECHANISMS, find_logins

Severity = Literal["info", "low", "medium", "high", "critical"]
Mechanism = Literal["user-pass", "imap-login", "auth-plain", "auth-login", "http-basic"]


@dataclass(frozen=True)
class CleartextConfig(AnalyzerConfig):
    mechanisms: list[Mechanism] = option(list(MECHANISMS),
                                         description="which kinds of login to report")
    severity: Severity = option("medium", description="severity of a clear-text login")
    anonymous_users: list[str] = option(["anonymous", "ftp"], kind="text",
                                        description="user names that are not secrets")
    anonymous_severity: Severity = option("info", description="severity of their logins")


class CleartextLogins(Analyzer[CleartextConfig]):  # Config = CleartextConfig
    name = "cleartext.logins"
    input_kind = "stream"
    version = "0.1.0"
    description = "logins sent in clear text (FTP, POP3, IMAP, SMTP AUTH, HTTP Basic)"

    async def analyze(self, record: StreamRecord, ctx: StepContext[CleartextConfig]
                      ) -> AsyncIterator[Verdict]:
        if record.direction != "orig":  # logins travel from the client
            return
        cfg = ctx.config  # a CleartextConfig: typed, no isinstance needed
        for login in find_logins(record.data, record.flow.dport):
            if login.mechanism not in cfg.mechanisms:
                continue
            anonymous = login.username.lower() in {u.lower() for u in cfg.anonymous_users}
            yield ctx.verdict_for(
                record,
                severity=cfg.anonymous_severity if anonymous else cfg.severity,
                signature_id=f"cleartext:{login.mechanism}",
                signature=f"Clear-text {login.protocol.upper()} login ({login.mechanism})",
                category="credential-exposure",
                tags=["credentials", login.protocol],
                evidence={"protocol": login.protocol, "mechanism": login.mechanism,
                          "username": login.username,
                          "password_length": login.password_length,
                          "offset": login.offset, "anonymous": anonymous})
