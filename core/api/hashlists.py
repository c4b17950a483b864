"""Hash lists over the API: the upload goes to a file in the tenant's ``uploads/``, then
``pcapwire hashlist import --json`` loads it in a child process (parsing and indexing
millions of lines never competes with the event loop), into the tenant's own
``hashlists.sqlite``. Lookups read the tenant's lists and the server's global ones
(:func:`pcapwire.hashlist.databases_for`) through a read-only connection.

Scopes: a tenant creates, replaces and removes its own lists (analyst role); global lists
(``DATA/hashlists.sqlite``, managed by the operator with ``pcapwire --data-dir DATA
hashlist ...``) are shown and consulted, never changed through the API.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pcapwire.api.bodies import receive_upload
from pcapwire.api.errors import ApiError
from pcapwire.cli import EXIT_OK, EXIT_PARTIAL
from pcapwire.hashlist import DB_NAME, HashListStore

if TYPE_CHECKING:
    from pcapwire.api.tenants import TenantStore

STATUS_BY_CODE = {"hashlist_exists": 409, "hashlist_import_busy": 409,
                  "hashlist_not_found": 404, "invalid_hashlist": 400}


@dataclass(frozen=True)
class ImportParams:
    name: str
    kind: str
    mode: str = "create"
    severity: str | None = None
    format: str = "auto"
    columns: tuple[str, ...] = ()
    label_column: str | None = None
    description: str | None = None
    filename: str = "upload"

    def argv(self) -> list[str]:
        """``pcapwire hashlist import`` options (``--opt=value``: a value starting with
        ``-`` stays a value)."""
        out = [f"--name={self.name}", f"--kind={self.kind}", f"--format={self.format}",
               f"--display-name={self.filename}", "--json"]
        if self.severity:
            out.append(f"--severity={self.severity}")
        out += [f"--column={c}" for c in self.columns]
        if self.label_column:
            out.append(f"--label-column={self.label_column}")
        if self.description is not None:
            out.append(f"--description={self.description}")
        if self.mode != "create":
            out.append(f"--{self.mode}")
        return out


async def receive(request: web.Request, directory: Path, limit: int) -> Path:
    """Stream the body to a file, refusing more than ``limit`` bytes (413)."""
    return await receive_upload(request, directory, limit, what="hash list",
                                limit_name="max_hashlist_bytes", suffix=".hashlist",
                                instead="import it on the server with `pcapwire hashlist "
                                        "import`")


async def import_upload(ts: TenantStore, upload: Path, params: ImportParams
                        ) -> dict[str, Any]:
    """Run the import; returns the CLI's JSON report or raises the matching ApiError."""
    if ts.importing_hashlist.locked():
        raise ApiError(409, "hashlist_import_busy", f"tenant {ts.tenant!r} is already "
                       "importing a hash list; retry when it finishes")
    async with ts.importing_hashlist:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pcapwire.cli", "--data-dir", str(ts.root), "hashlist",
            "import", *params.argv(), "--", str(upload),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
    text = out.decode(errors="replace").strip()
    doc: dict[str, Any] = {}
    if text:
        try:
            doc = json.loads(text.splitlines()[-1])
        except json.JSONDecodeError:
            doc = {}
    if proc.returncode in (EXIT_OK, EXIT_PARTIAL) and "list" in doc:
        return doc
    message = str(doc.get("error") or err.decode(errors="replace").strip()
                  .removeprefix("pcapwire: error: ") or f"import exited {proc.returncode}")
    message = message.replace(str(upload), params.filename)
    code = str(doc.get("code") or "invalid_hashlist")
    details = {"report": doc["report"]} if doc.get("report") else {}
    raise ApiError(STATUS_BY_CODE.get(code, 400), code, message, details)


def remove(ts: TenantStore, name: str) -> bool:
    """Remove one of the tenant's lists (blocking: call it in a thread)."""
    path = ts.root / DB_NAME
    if not path.exists():
        return False
    with HashListStore(path) as store:
        return store.remove(name)
