"""Server settings; ``pcapwire serve`` fills them from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pcapwire.api import limits
from pcapwire.errors import ConfigError
from pcapwire.store.limits import IngestLimits

if TYPE_CHECKING:
    from pcapwire.cluster.config import ClusterConfig


@dataclass
class HttpLimits:
    """Connection-level limits (see :mod:`.limits`; 0 turns one off), enforced by
    :mod:`.connections` before a request reaches the application."""

    header_timeout_s: float = limits.HEADER_TIMEOUT_S
    keepalive_timeout_s: float = limits.KEEPALIVE_TIMEOUT_S
    body_min_bytes_per_s: int = limits.BODY_MIN_BYTES_PER_S
    body_rate_window_s: float = limits.BODY_RATE_WINDOW_S
    max_connections_per_client: int = limits.MAX_CONNECTIONS_PER_CLIENT
    log_burst_lines: int = limits.LOG_BURST_LINES
    log_lines_per_s: float = limits.LOG_LINES_PER_S

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value >= 0:  # also refuses nan
                raise ConfigError(f"{name} must be 0 (off) or positive, not {value!r}")


@dataclass
class ApiConfig:
    """``data_dir`` holds ``auth.sqlite`` and one full pcapwire store per tenant under
    ``tenants/<tenant>/``."""

    data_dir: Path
    max_body_bytes: int = limits.MAX_JSON_BODY_BYTES
    max_upload_bytes: int = limits.MAX_UPLOAD_BYTES
    # An ingest's limits (0: off); see ingest_limits.
    max_decompressed_bytes: int = limits.MAX_DECOMPRESSED_BYTES
    max_decompression_ratio: float = limits.MAX_DECOMPRESSION_RATIO
    tenant_quota_bytes: int = limits.TENANT_QUOTA_BYTES
    max_hashlist_bytes: int = limits.MAX_HASHLIST_UPLOAD_BYTES
    max_hashlist_rows: int = limits.MAX_HASHLIST_ROWS
    max_hashlist_steps: int = limits.MAX_HASHLIST_SQLITE_STEPS
    hashlist_import_timeout_s: float = limits.HASHLIST_IMPORT_TIMEOUT_S
    max_concurrent_queries: int = limits.MAX_CONCURRENT_QUERIES_PER_TENANT
    max_query_result_bytes: int = limits.MAX_QUERY_RESULT_BYTES
    event_margin_s: float = limits.DEFAULT_EVENT_MARGIN_S
    # Server-side directories an admin may ingest from by path (POST /api/v1/ingest).
    ingest_paths: list[Path] = field(default_factory=list)
    # Directories of workflow YAML documents this server offers (by their ``name``).
    workflow_dirs: list[Path] = field(default_factory=list)
    # A cluster sensor: the trigger service runs no hunt; `hunt` jobs (the sensor's
    # `pcapwire worker --nats`) do. It queues them itself (pcapwire.triggers.hunt_jobs):
    # on NATS at ``nats_url`` when given, else as local worker children.
    hunts_by_workers: bool = False
    nats_url: str | None = None
    # This server's name in its cluster (the cluster file's): triggers whose scope.sensor
    # names only other sensors do nothing here ("" unknown: every trigger runs).
    sensor_name: str = ""
    session_ttl_s: int = limits.SESSION_TTL_S
    http: HttpLimits = field(default_factory=HttpLimits)
    # TLS served by pcapwire itself (certificate chain and key, PEM), or a TLS-terminating
    # proxy declared in front; either makes the session cookie Secure unless
    # ``secure_cookies`` says otherwise.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    behind_tls_proxy: bool = False
    secure_cookies: bool | None = None
    hsts_max_age_s: int = limits.HSTS_MAX_AGE_S  # sent only when serving TLS itself
    # A sensor of a cluster (pcapwire.cluster.tls): clients must present a certificate
    # signed by ``client_ca`` (and, if given, one of these SHA-256 fingerprints); only
    # then are the central's on-behalf-of headers honoured.
    client_ca: Path | None = None
    client_cert_sha256: tuple[str, ...] = ()
    # A central API (pcapwire.cluster.config): the cluster file, loaded into ``cluster``.
    cluster_file: Path | None = None
    cluster: ClusterConfig | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate (--tls-cert) and its key "
                              "(--tls-key)")
        self.tls_cert = Path(self.tls_cert).resolve() if self.tls_cert else None
        self.tls_key = Path(self.tls_key).resolve() if self.tls_key else None
        if self.client_ca is not None and self.tls_cert is None:
            raise ConfigError("--client-ca needs --tls-cert and --tls-key (client "
                              "certificates are checked in the TLS handshake)")
        if self.client_cert_sha256 and self.client_ca is None:
            raise ConfigError("--client-cert-sha256 needs --client-ca (the CA that signed "
                              "the pinned certificate)")
        self.client_ca = Path(self.client_ca).resolve() if self.client_ca else None
        if self.client_cert_sha256:
            from pcapwire.cluster.tls import parse_sha256

            self.client_cert_sha256 = tuple(parse_sha256(p) for p in self.client_cert_sha256)
        if self.sensor_name:
            from pcapwire.names import NAME_RE

            if not NAME_RE.fullmatch(self.sensor_name):
                raise ConfigError(f"--sensor-name {self.sensor_name!r}: 1-63 characters "
                                  "a-z 0-9 _ -, starting with a letter or digit (the "
                                  "sensor's name in the cluster file)")
        if self.nats_url is not None and not (self.hunts_by_workers and self.sensor_name):
            raise ConfigError("--nats needs --hunts-by-workers and --sensor-name (the hunt "
                              "jobs go to that sensor's `pcapwire worker --nats`)")
        if self.cluster_file is not None:
            from pcapwire.cluster.config import load_cluster

            self.cluster_file = Path(self.cluster_file).resolve()
            self.cluster = load_cluster(self.cluster_file)
        if self.secure_cookies is None:
            self.secure_cookies = self.tls or self.behind_tls_proxy
        if self.hsts_max_age_s < 0:
            raise ConfigError("the HSTS max-age must be 0 or positive")
        self.data_dir = Path(self.data_dir).resolve()
        self.ingest_paths = [Path(p).resolve() for p in self.ingest_paths]
        self.workflow_dirs = [Path(p).resolve() for p in self.workflow_dirs]

    @property
    def tls(self) -> bool:
        """pcapwire itself serves HTTPS."""
        return self.tls_cert is not None

    @property
    def ingest_limits(self) -> IngestLimits:
        """What one ingest into a tenant may add (passed to its ``pcapwire ingest``)."""
        return IngestLimits(max_decompressed_bytes=self.max_decompressed_bytes or None,
                            max_decompression_ratio=self.max_decompression_ratio or None,
                            quota_bytes=self.tenant_quota_bytes or None)

    @property
    def auth_db(self) -> Path:
        return self.data_dir / "auth.sqlite"

    def tenant_dir(self, tenant: str) -> Path:
        return self.data_dir / "tenants" / tenant
