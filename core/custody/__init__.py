"""Chain of custody: hash-chained logs of every action on evidence (:mod:`.log`)."""

from pcapwire.custody.log import (
    GENESIS,
    actor_cli,
    actor_token,
    append,
    file_object,
    log_path,
    read,
)

__all__ = ["GENESIS", "actor_cli", "actor_token", "append", "file_object", "log_path", "read"]
