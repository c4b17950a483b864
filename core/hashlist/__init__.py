"""Hash lists for file triage (design §5, issue 5 item 6): allow and deny lists of MD5,
SHA-1 and SHA-256 digests, loaded from plain text, CSV and the NSRL RDS formats
(:mod:`.formats`) into an indexed SQLite store (:mod:`.store`, :mod:`.model`), and the
outcome of a file -- known-good, known-bad or unknown -- from the lists that hold its
digests (:mod:`.triage`, which also documents tenant and global scopes).

::

    store = HashListStore(data_dir / "hashlists.sqlite")
    report = store.import_sources([Source(Path("bad.txt"))], name="bad", kind="deny")
    HashListSet.for_data_dir(data_dir).triage([bytes.fromhex(sha256)]).verdict
"""

from pcapwire.hashlist.digests import ALGORITHMS, algorithm, is_digest, parse_digest
from pcapwire.hashlist.formats import FORMATS, BadLine, HashListError, Source, detect
from pcapwire.hashlist.limits import ImportCancelled, ImportLimits, LimitExceeded
from pcapwire.hashlist.model import (
    DEFAULT_SEVERITY,
    KINDS,
    MODES,
    HashList,
    ImportBusy,
    ImportFailed,
    ImportReport,
    ListExists,
    ListNotFound,
    Match,
    check_list_name,
)
from pcapwire.hashlist.store import DB_NAME, HashListStore
from pcapwire.hashlist.triage import (
    VERDICTS,
    HashListSet,
    Triage,
    classify,
    databases_for,
)

__all__ = [
    "ALGORITHMS",
    "DB_NAME",
    "DEFAULT_SEVERITY",
    "FORMATS",
    "KINDS",
    "MODES",
    "VERDICTS",
    "BadLine",
    "HashList",
    "HashListError",
    "HashListSet",
    "HashListStore",
    "ImportBusy",
    "ImportCancelled",
    "ImportFailed",
    "ImportLimits",
    "ImportReport",
    "LimitExceeded",
    "ListExists",
    "ListNotFound",
    "Match",
    "Source",
    "Triage",
    "algorithm",
    "check_list_name",
    "classify",
    "databases_for",
    "detect",
    "is_digest",
    "parse_digest",
]
