"""Harmless RTF documents built byte for byte for the sandbox tests: OLE 1.0 objects
(MS-OLEDS 2.2.4 ObjectHeader + native data) in ``\\objdata`` as hex. The "Equation.3"
object carries no equation and no shellcode, only its class name; the package holds a
text file."""

from __future__ import annotations

import struct


def _lpstr(text: bytes) -> bytes:
    """LengthPrefixedAnsiString: length with the terminating NUL, then the bytes."""
    return struct.pack("<I", len(text) + 1) + text + b"\0" if text else struct.pack("<I", 0)


def ole1_object(class_name: bytes, native: bytes) -> bytes:
    """An embedded OLE 1.0 object (version 0x0501, format 2 = embedded)."""
    return (struct.pack("<II", 0x0501, 2) + _lpstr(class_name) + _lpstr(b"") + _lpstr(b"")
            + struct.pack("<I", len(native)) + native)


def package(filename: bytes, source: bytes, content: bytes) -> bytes:
    """The native data of an OLE Package object (what Packager.exe writes)."""
    return (struct.pack("<H", 2) + filename + b"\0" + source + b"\0" + struct.pack("<II", 0, 0)
            + b"C:\\Temp\\" + filename + b"\0" + struct.pack("<I", len(content)) + content)


def build_rtf(objects: list[bytes]) -> bytes:
    body = b"".join(b"{\\object\\objemb{\\*\\objdata " + obj.hex().encode() + b"}}\\par\n"
                    for obj in objects)
    return (b"{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times New Roman;}}\n"
            b"\\f0\\fs24 Quarterly report\\par\n" + body + b"}\n")


def plain_rtf() -> bytes:
    return build_rtf([])


def dropper_rtf() -> bytes:
    """An OLE Package dropping a text file named like a script, and an Equation.3 object."""
    return build_rtf([
        ole1_object(b"Package", package(b"invoice.vbs", b"C:\\Users\\a\\invoice.vbs",
                                        b"' only a comment\r\n")),
        ole1_object(b"Equation.3", b"\0" * 64)])
