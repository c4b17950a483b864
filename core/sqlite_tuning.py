"""Process-wide SQLite settings, made once when :mod:`pcapwire` is imported (before the
process opens a connection).

SQLite's memory statistics off (``sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0)``): the
system library Python's ``_sqlite3`` links (Debian's libsqlite3) is built with them on,
so every allocation of every connection takes one process-wide mutex to count it, and
threads that run statements at the same time wait on each other for it (the hunt's two
IP walkers: ~8-10 ms of a dense hunt's ~45 ms walk). Nothing of pcapwire reads the
statistics or sets a heap limit (``sqlite3_soft_heap_limit64`` and the ``soft_heap_limit``
/ ``hard_heap_limit`` pragmas need them).

``sqlite3_config`` is refused once SQLite is initialised, and Python's ``_sqlite3``
initialises it when imported (3.11). So the library is shut down, configured and
initialised again — only while it holds no allocation but the probe made to tell
(``SQLITE_STATUS_MALLOC_COUNT`` 1 with the probe's: no connection, statement or blob is
open anywhere in the process; 0: the statistics are off already). Otherwise, or if
SQLite refuses a step, nothing changes (logged at debug): the setting is an
optimisation, never a condition. The functions are resolved through the ``_sqlite3``
extension's own handle (its symbol lookup searches the library it links), so they are
those of the SQLite the ``sqlite3`` module uses, whatever its file is named. Call it
before the process starts threads that use SQLite.
"""

from __future__ import annotations

import _sqlite3  # the sqlite3 module's extension: importing it initialises SQLite
import ctypes
import functools
import logging

log = logging.getLogger(__name__)

#: ``sqlite3_config`` option: memory statistics on (1) or off (0).
SQLITE_CONFIG_MEMSTATUS = 9
#: ``sqlite3_status64`` counters: bytes and allocations outstanding (kept only while the
#: statistics are on).
SQLITE_STATUS_MEMORY_USED = 0
SQLITE_STATUS_MALLOC_COUNT = 9
SQLITE_OK = 0


@functools.cache
def _library() -> ctypes.CDLL:
    """The SQLite functions the ``sqlite3`` module calls, typed."""
    lib = ctypes.CDLL(_sqlite3.__file__)
    lib.sqlite3_config.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.sqlite3_status64.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                     ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    lib.sqlite3_malloc64.argtypes = [ctypes.c_uint64]
    lib.sqlite3_malloc64.restype = ctypes.c_void_p
    lib.sqlite3_free.argtypes = [ctypes.c_void_p]
    lib.sqlite3_free.restype = None
    return lib


def status(op: int) -> tuple[int, int]:
    """``sqlite3_status64(op)``: the counter's current value and high-water mark."""
    current, highwater = ctypes.c_int64(), ctypes.c_int64()
    rc = _library().sqlite3_status64(op, ctypes.byref(current), ctypes.byref(highwater), 0)
    if rc != SQLITE_OK:
        raise OSError(f"sqlite3_status64({op}) returned {rc}")
    return current.value, highwater.value


def memstatus_off() -> bool:
    """SQLite's memory statistics off for the process (see the module); whether they are
    off now."""
    lib = _library()
    probe = lib.sqlite3_malloc64(1)
    try:
        outstanding = status(SQLITE_STATUS_MALLOC_COUNT)[0]
    finally:
        lib.sqlite3_free(probe)
    if outstanding == 0:  # the probe was not counted: off already
        return True
    if outstanding > 1:
        log.debug("SQLite memory statistics left on: %d allocations outstanding (a "
                  "connection is open)", outstanding - 1)
        return False
    rc = lib.sqlite3_shutdown()
    if rc == SQLITE_OK:
        rc = lib.sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0)
        if rc != SQLITE_OK:
            log.debug("SQLite memory statistics left on: sqlite3_config returned %d", rc)
    else:
        log.debug("SQLite memory statistics left on: sqlite3_shutdown returned %d", rc)
    init = lib.sqlite3_initialize()
    if init != SQLITE_OK:  # the sqlite3 module's connections would fail as they open
        raise OSError(f"sqlite3_initialize returned {init}")
    return rc == SQLITE_OK
