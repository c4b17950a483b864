"""Names that become path components, NATS subject tokens and URL parts: a tenant's and a
cluster sensor's (one rule for both, light enough for any module to import)."""

from __future__ import annotations

import re

#: a tenant or sensor name: 1-63 characters a-z 0-9 _ -, starting with a letter or digit
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
