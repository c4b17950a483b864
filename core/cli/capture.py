"""``pcapwire capture``: record interfaces and pcap streams into the store, in the
foreground until SIGINT/SIGTERM (a second signal stops at once: what was written is
recovered by the next start); ``pcapwire capture status [--json]``.

Exit codes: 0 everything received was recorded, 1 packets were lost (counted by cause,
see the summary) or could not be written, 2 usage or setup error."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any, TextIO

from pcapwire.cli import EXIT_OK, EXIT_PARTIAL
from pcapwire.cli.signals import stopped_by_signals
from pcapwire.errors import ConfigError
from pcapwire.store.segments import SEGMENT_MAX_BYTES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capture", help="record interfaces or pcap streams into the store (live recording)",
        description="Record into --data-dir until SIGINT/SIGTERM: packets are queryable "
        "about a second after they arrive. `pcapwire capture status` shows a running "
        "recorder and the loss kept in the catalog.")
    p.add_argument("action", nargs="?", choices=("status",),
                   help="status: the running recorder's counters and the recorded loss")
    p.add_argument("-i", "--interface", action="append", default=[], metavar="IFACE",
                   help="capture on this interface (AF_PACKET; repeat for several)")
    p.add_argument("--from", dest="from_", action="append", default=[], metavar="SOURCE",
                   help="record a pcap/pcapng stream: - (stdin) or pcap-over-ip://HOST:PORT "
                        "(reconnects with backoff)")
    p.add_argument("--listen-pcap-over-ip", action="append", default=[], metavar="HOST:PORT",
                   help="accept PCAP-over-IP connections, each a pcap stream")
    p.add_argument("--filter", default="", metavar="BPF",
                   help="capture filter for -i (compiled by libpcap, run in the kernel)")
    p.add_argument("--snaplen", type=int, default=262144, metavar="N",
                   help="bytes kept per packet for -i (default 262144)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="capture threads per interface (a PACKET_FANOUT hash group; default 1)")
    p.add_argument("--ring-mb", type=int, default=0, metavar="N",
                   help="kernel ring per capture thread, MiB (default: the capture core's)")
    p.add_argument("--segment-size", type=float, default=SEGMENT_MAX_BYTES / 2**20,
                   metavar="MiB", help=f"seal a segment at this size (default "
                   f"{SEGMENT_MAX_BYTES // 2**20})")
    p.add_argument("--rotate", type=int, default=3600, metavar="SECONDS",
                   help="also seal at every multiple of SECONDS of the clock (UTC: 60 = every "
                        "full minute; default 3600; 0: by size only)")
    p.add_argument("--commit-interval", type=float, default=0.5, metavar="S",
                   help="make new packets queryable at least this often (default 0.5)")
    p.add_argument("--queue-mb", type=float, default=128, metavar="MiB",
                   help="backlog between reading and writing, per input (default 128); "
                        "what does not fit is counted as backlog drops")
    p.add_argument("--backlog-full", choices=("drop", "wait"), default="drop",
                   help="streams only: when the backlog is full, drop (counted) or make the "
                        "sender wait (default drop); interfaces always drop")
    p.add_argument("--disk-reserve-mb", type=float, default=64, metavar="MiB",
                   help="stop writing packets (counted as disk drops) when less than this "
                        "would stay free, so the catalog can still commit (default 64)")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fdatasync segments before committing them (a crash of the "
                        "machine, not only of pcapwire, may then lose committed packets)")
    p.add_argument("--progress", choices=("auto", "lines", "none"), default="auto",
                   help="status line on stderr: auto (on a terminal), lines (one a second)")
    p.add_argument("--json", action="store_true", help="capture status: as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        from pcapwire.cli.capture_status import show_status

        return show_status(args.data_dir, args.json)
    if args.json:
        raise ConfigError("--json goes with `pcapwire capture status`")
    from pcapwire.capture import Recorder, RecorderConfig

    sources, listeners = _inputs(args)
    config = RecorderConfig(
        segment_bytes=int(args.segment_size * 2**20), rotate_seconds=args.rotate,
        commit_interval=args.commit_interval, queue_bytes=int(args.queue_mb * 2**20),
        backlog_policy=args.backlog_full, fsync=not args.no_fsync,
        disk_reserve=int(args.disk_reserve_mb * 2**20))
    recorder = Recorder(args.data_dir, config)
    stop = threading.Event()
    with stopped_by_signals(stop.set, second_kills=True):  # a second one stops at once
        progress = _Progress(sys.stderr, args.progress)
        recorder.on_status = progress
        try:
            recorder.start(sources, listeners)
        except BaseException:
            _close(sources, listeners)
            raise
        try:
            if recorder.recovery is not None and recorder.recovery.segments:
                rep = recorder.recovery
                print(f"recovered {len(rep.segments)} segment(s) left open by a previous "
                      f"recorder ({rep.packets} packets after their last commit)",
                      file=sys.stderr)
            recorder.wait(stop)
        finally:
            recorder.stop()
    progress.end()
    if recorder.stop_reason is not None:  # the store's retention when_full = "stop"
        print(f"pcapwire: recorder stopped: {recorder.stop_reason}", file=sys.stderr)
        _summary(recorder)
        return EXIT_PARTIAL
    return _summary(recorder)


def _inputs(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from pcapwire.capture.sources import (
        AfPacketSource,
        PcapOverIpListener,
        native_capture,
        parse_from,
        parse_hostport,
    )

    if not (args.interface or args.from_ or args.listen_pcap_over_ip):
        raise ConfigError("nothing to record: give -i IFACE, --from - | "
                          "pcap-over-ip://HOST:PORT, or --listen-pcap-over-ip HOST:PORT")
    if args.from_.count("-") > 1:
        raise ConfigError("--from - (stdin) can be given once")
    if not args.interface and (args.filter or args.threads != 1 or args.ring_mb):
        raise ConfigError("--filter, --threads and --ring-mb apply to -i only")
    if args.threads < 1 or args.threads > 64:
        raise ConfigError("--threads: 1 to 64")
    if not 1 <= args.snaplen <= 262144:
        raise ConfigError("--snaplen: 1 to 262144")
    if args.interface:
        native_capture()  # a clear error before anything starts
    for text in args.listen_pcap_over_ip:
        parse_hostport(text, "--listen-pcap-over-ip")
    sources: list[Any] = []
    listeners: list[Any] = []
    try:
        for n, ifname in enumerate(dict.fromkeys(args.interface)):
            group = ((os.getpid() + n) & 0xFFFF) or 1
            for t in range(args.threads):
                sources.append(AfPacketSource(
                    ifname, t, args.threads, snaplen=args.snaplen, bpf=args.filter,
                    ring_bytes=args.ring_mb * 2**20 or None, fanout_group=group))
        sources += [parse_from(text) for text in dict.fromkeys(args.from_)]
        listeners += [PcapOverIpListener(*parse_hostport(text, "--listen-pcap-over-ip"))
                      for text in args.listen_pcap_over_ip]
    except BaseException:
        _close(sources, listeners)
        raise
    return sources, listeners


def _close(sources: list[Any], listeners: list[Any]) -> None:
    for src in sources:
        src.close()
    for li in listeners:
        li.close()


class _Progress:
    """The live status line: redrawn on a terminal, or one line a second (``lines``)."""

    def __init__(self, out: TextIO, mode: str) -> None:
        self.out = out
        self.tty = out.isatty()
        self.mode = mode if mode != "auto" else ("tty" if self.tty else "none")
        self.width = 0

    def __call__(self, doc: dict[str, Any]) -> None:
        from pcapwire.capture.status import status_line

        if self.mode == "none" or doc.get("state") != "running":
            return
        line = status_line(doc)
        if self.mode == "tty":
            self.out.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.out.write(time.strftime("%H:%M:%S ") + line + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.mode == "tty" and self.width:
            self.out.write("\n")
            self.out.flush()


def _summary(recorder: Any) -> int:
    totals = recorder.totals()
    lost = recorder.write_errors
    for name, row in sorted(totals.items()):
        drops = row["kernel_drops"] + row["if_drops"] + row["backlog_drops"]
        lost += drops + row["input_errors"]
        print(f"{name}: {row['packets']} packets recorded, drops: kernel {row['kernel_drops']}"
              f", interface {row['if_drops']}, backlog {row['backlog_drops']} (disk "
              f"{row['disk_drops']}), input errors {row['input_errors']}", file=sys.stderr)
    if recorder.write_errors:
        print(f"write errors: {recorder.write_errors}", file=sys.stderr)
    return EXIT_PARTIAL if lost else EXIT_OK
