"""Server settings; ``pcapwire serve`` fills them from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pcapwire.api import limits


@dataclass
class ApiConfig:
    """``data_dir`` holds ``auth.sqlite`` and one full pcapwire store per tenant under
    ``tenants/<tenant>/``."""

    data_dir: Path
    max_body_bytes: int = limits.MAX_JSON_BODY_BYTES
    max_upload_bytes: int = limits.MAX_UPLOAD_BYTES
    max_hashlist_bytes: int = limits.MAX_HASHLIST_UPLOAD_BYTES
    max_concurrent_queries: int = limits.MAX_CONCURRENT_QUERIES_PER_TENANT
    max_query_result_bytes: int = limits.MAX_QUERY_RESULT_BYTES
    event_margin_s: float = limits.DEFAULT_EVENT_MARGIN_S
    # Server-side directories an admin may ingest from by path (POST /api/v1/ingest).
    ingest_paths: list[Path] = field(default_factory=list)
    # Directories of workflow YAML documents this server offers (by their ``name``).
    workflow_dirs: list[Path] = field(default_factory=list)
    # Set when served behind TLS so the session cookie gets the Secure attribute.
    secure_cookies: bool = False
    session_ttl_s: int = limits.SESSION_TTL_S

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.ingest_paths = [Path(p).resolve() for p in self.ingest_paths]
        self.workflow_dirs = [Path(p).resolve() for p in self.workflow_dirs]

    @property
    def auth_db(self) -> Path:
        return self.data_dir / "auth.sqlite"

    def tenant_dir(self, tenant: str) -> Path:
        return self.data_dir / "tenants" / tenant
