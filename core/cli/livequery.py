"""``pcapwire query --follow``: the query's packets, then those recorded after, written as
one capture until SIGINT or SIGTERM (or until the reader of stdout leaves), and what the
window lost (:mod:`pcapwire.query.loss`)."""

from __future__ import annotations

import argparse
import select
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from pcapwire.cli.signals import stopped_by_signals
from pcapwire.query import QuerySpec, QueryStats
from pcapwire.query.follow import Follow
from pcapwire.query.loss import loss_in_window
from pcapwire.store import Store


def reader_gone(out: BinaryIO) -> Callable[[], bool] | None:
    """For a pipe: whether its reader has closed it (POLLERR/POLLHUP on our end), so an
    idle follow ends with ``| head`` too instead of at its next packet."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    poller = select.poll()
    poller.register(fd, select.POLLERR | select.POLLHUP)

    def gone() -> bool:
        return any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in poller.poll(0))
    return gone


def follow_to(args: argparse.Namespace, spec: QuerySpec) -> QueryStats:
    """Follow ``spec`` into ``-w`` (written in place and flushed after every chunk: a
    file is a valid capture while it grows, and after an error up to it)."""
    with Store.existing(args.data_dir) as store:
        if args.write == "-":
            out = sys.stdout.buffer
            follow = Follow(store.query_engine(), spec, idle_check=reader_gone(out))
            with stopped_by_signals(follow.stop):
                stats = follow.write(out)
        else:
            with open(args.write, "wb") as f:
                follow = Follow(store.query_engine(), spec)
                with stopped_by_signals(follow.stop):
                    stats = follow.write(f)
        report_loss(store, spec, time.time_ns())
    return stats


def report_loss(store: Store, spec: QuerySpec, now_ns: int | None = None) -> None:
    """Say on stderr what the query's window lost while it was recorded, and what of it
    retention has deleted since, if anything."""
    end = spec.end_ns if spec.end_ns is not None else now_ns
    loss = loss_in_window(store.catalog, spec.start_ns, end)
    if loss.total or loss.expired.packets:
        print(f"pcapwire: warning: {loss.describe()}", file=sys.stderr)
