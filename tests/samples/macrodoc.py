"""Build a tiny Word document (.docm) with a harmless ``AutoOpen`` VBA macro, byte for byte
reproducibly, without Office.

oletools' own test documents were saved by Office; we cannot do that here, so this
module writes the two formats by hand from their specifications:

* the VBA project (``word/vbaProject.bin``) per [MS-OVBA]: ``PROJECT``, ``PROJECTwm``,
  ``VBA/_VBA_PROJECT``, ``VBA/dir`` (the project information and module records) and one
  module stream, whose source is "compressed" (MS-OVBA 2.4.1) with literal tokens only;
* in a Compound File Binary (OLE2, [MS-CFB] version 3, 512-byte sectors, every stream in
  the mini stream), the container olefile and olevba read;
* zipped with ``[Content_Types].xml``, ``word/document.xml`` and the relationship that
  points Word at the VBA project, with fixed timestamps.

The macro only shows a message box.
"""

from __future__ import annotations

import io
import struct
import zipfile

MACRO = ('Attribute VB_Name = "Module1"\r\n'
         "Sub AutoOpen()\r\n"
         '    MsgBox "pcapwire test document: this macro is harmless"\r\n'
         "End Sub\r\n")

ENDOFCHAIN, FREESECT, FATSECT, NOSTREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF


# ---- MS-OVBA ------------------------------------------------------------------------------
def ovba_compress(data: bytes) -> bytes:
    """A CompressedContainer holding ``data`` in one chunk of literal tokens."""
    if len(data) > 3640:  # 2 + n + ceil(n/8) must stay <= 4098 (one chunk)
        raise ValueError("macro source too long for a single literal chunk")
    body = bytearray()
    for i in range(0, len(data), 8):
        body += b"\x00" + data[i:i + 8]  # flag byte 0: eight literal tokens
    header = (len(body) + 2 - 3) | (0b011 << 12) | 0x8000
    return b"\x01" + struct.pack("<H", header) + bytes(body)


def _rec(rid: int, payload: bytes) -> bytes:
    return struct.pack("<HI", rid, len(payload)) + payload


def dir_stream(module: str) -> bytes:
    name, uname = module.encode("ascii"), module.encode("utf-16-le")
    out = bytearray()
    out += _rec(0x0001, struct.pack("<I", 1))  # PROJECTSYSKIND: 32-bit Windows
    out += _rec(0x0002, struct.pack("<I", 0x409))  # PROJECTLCID
    out += _rec(0x0014, struct.pack("<I", 0x409))  # PROJECTLCIDINVOKE
    out += _rec(0x0003, struct.pack("<H", 1252))  # PROJECTCODEPAGE
    out += _rec(0x0004, b"Project")  # PROJECTNAME
    out += _rec(0x0005, b"") + _rec(0x0040, b"")  # PROJECTDOCSTRING (+ unicode)
    out += _rec(0x0006, b"") + _rec(0x003D, b"")  # PROJECTHELPFILEPATH (1 and 2)
    out += _rec(0x0007, struct.pack("<I", 0))  # PROJECTHELPCONTEXT
    out += _rec(0x0008, struct.pack("<I", 0))  # PROJECTLIBFLAGS
    out += struct.pack("<HIIH", 0x0009, 4, 1, 0)  # PROJECTVERSION (reserved=4, major, minor)
    out += _rec(0x000C, b"") + _rec(0x003C, b"")  # PROJECTCONSTANTS (+ unicode)
    out += _rec(0x000F, struct.pack("<H", 1))  # PROJECTMODULES: one module
    out += _rec(0x0013, struct.pack("<H", 0xFFFF))  # PROJECTCOOKIE
    out += _rec(0x0019, name) + _rec(0x0047, uname)  # MODULENAME, MODULENAMEUNICODE
    out += _rec(0x001A, name) + _rec(0x0032, uname)  # MODULESTREAMNAME (+ unicode)
    out += _rec(0x001C, b"") + _rec(0x0048, b"")  # MODULEDOCSTRING (+ unicode)
    out += _rec(0x0031, struct.pack("<I", 0))  # MODULEOFFSET: source at offset 0
    out += _rec(0x001E, struct.pack("<I", 0))  # MODULEHELPCONTEXT
    out += _rec(0x002C, struct.pack("<H", 0xFFFF))  # MODULECOOKIE
    out += struct.pack("<HI", 0x0021, 0)  # MODULETYPE: procedural
    out += struct.pack("<HI", 0x002B, 0)  # module terminator
    out += struct.pack("<HI", 0x0010, 0)  # dir terminator
    return bytes(out)


def vba_streams(module: str = "Module1", source: str = MACRO) -> dict[str, bytes]:
    project = ('ID="{00000000-0000-0000-0000-000000000000}"\r\n'
               f"Module={module}\r\n"
               'Name="Project"\r\n'
               'HelpContextID="0"\r\n'
               'VersionCompatible32="393222000"\r\n'
               "\r\n[Host Extender Info]\r\n"
               "&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000\r\n"
               f"\r\n[Workspace]\r\n{module}=0, 0, 0, 0, C\r\n").encode("cp1252")
    projectwm = module.encode("ascii") + b"\0" + module.encode("utf-16-le") + b"\0\0" + b"\0\0"
    return {"PROJECT": project, "PROJECTwm": projectwm,
            "VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
            "VBA/dir": ovba_compress(dir_stream(module)),
            f"VBA/{module}": ovba_compress(source.encode("cp1252"))}


# ---- MS-CFB -------------------------------------------------------------------------------
def _cfb_less(a: str) -> tuple[int, str]:
    return (len(a), a.upper())  # MS-CFB 2.6.4: shorter names first, then case-insensitive


def cfb(streams: dict[str, bytes]) -> bytes:
    """A version-3 compound file holding ``streams`` (paths with ``/``), all < 4096 bytes."""
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "children": []}]
    index: dict[str, int] = {"": 0}
    for path in sorted(streams):
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if sub in index:
                continue
            is_stream = depth == len(parts)
            index[sub] = len(entries)
            entries.append({"name": parts[depth - 1], "type": 2 if is_stream else 1,
                            "children": [], "data": streams[path] if is_stream else b""})
            entries[index["/".join(parts[:depth - 1])]]["children"].append(index[sub])
    # mini stream: every stream, 64-byte mini sectors
    mini = bytearray()
    minifat: list[int] = []
    for e in entries:
        if e["type"] != 2:
            continue
        data = e["data"]
        if len(data) >= 4096:
            raise ValueError("only small streams are supported")
        n = max(1, -(-len(data) // 64))
        e["start"] = len(minifat)
        minifat += [len(minifat) + i + 1 for i in range(n - 1)] + [ENDOFCHAIN]
        mini += data.ljust(n * 64, b"\0")
    # siblings: a chain ordered as MS-CFB compares names (a valid binary search tree)
    for e in entries:
        kids = sorted(e["children"], key=lambda i: _cfb_less(entries[i]["name"]))
        e["child"] = kids[0] if kids else NOSTREAM
        for a, b in zip(kids, [*kids[1:], NOSTREAM][:len(kids)], strict=True):
            entries[a]["right"] = b
    dir_sectors = -(-len(entries) // 4)
    minifat_sectors = max(1, -(-len(minifat) // 128))
    mini_sectors = -(-len(mini) // 512)
    fat_sectors = 1
    total = fat_sectors + dir_sectors + minifat_sectors + mini_sectors
    if total > 128:
        raise ValueError("too many sectors for one FAT sector")
    first_dir, first_minifat = fat_sectors, fat_sectors + dir_sectors
    first_mini = first_minifat + minifat_sectors
    fat = [FATSECT]
    for start, count in ((first_dir, dir_sectors), (first_minifat, minifat_sectors),
                         (first_mini, mini_sectors)):
        fat += [start + i + 1 for i in range(count - 1)] + [ENDOFCHAIN]
    fat += [FREESECT] * (128 - len(fat))
    entries[0]["start"], entries[0]["size"] = first_mini, len(mini)
    dir_bytes = bytearray()
    for e in entries:
        name = e["name"].encode("utf-16-le") + b"\0\0"
        size = e.get("size", len(e.get("data", b"")))
        start = e.get("start", ENDOFCHAIN if e["type"] == 1 else 0)
        if e["type"] == 1:
            start, size = 0, 0
        dir_bytes += (name.ljust(64, b"\0") + struct.pack(
            "<HBBIII16sIQQIQ", len(name), e["type"], 1, e.get("left", NOSTREAM),
            e.get("right", NOSTREAM), e["child"], b"\0" * 16, 0, 0, 0, start, size))
    dir_bytes = dir_bytes.ljust(dir_sectors * 512, b"\0")
    for i in range(len(entries), dir_sectors * 4):  # unused entries: empty, no siblings
        off = i * 128
        dir_bytes[off + 68:off + 80] = struct.pack("<III", NOSTREAM, NOSTREAM, NOSTREAM)
    difat = [0] + [FREESECT] * 108
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\0" * 16,
        0x3E, 3, 0xFFFE, 9, 6, b"\0" * 6, 0, fat_sectors, first_dir, 0, 4096,
        first_minifat, minifat_sectors, ENDOFCHAIN, 0, *difat)
    minifat_bytes = b"".join(struct.pack("<I", x) for x in minifat)
    minifat_bytes = minifat_bytes.ljust(minifat_sectors * 512, b"\xff")
    return (header + b"".join(struct.pack("<I", x) for x in fat) + bytes(dir_bytes)
            + minifat_bytes + bytes(mini).ljust(mini_sectors * 512, b"\0"))


# ---- OOXML --------------------------------------------------------------------------------
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.ms-word.document.'
    'macroEnabled.main+xml"/></Types>')
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>pcapwire sandbox test document</w:t></w:r></w:p></w:body>"
    "</w:document>")
DOCUMENT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.microsoft.com/office/2006/relationships/'
    'vbaProject" Target="vbaProject.bin"/></Relationships>')


def build_docm(source: str = MACRO) -> bytes:
    """The .docm bytes (identical on every call for the same ``source``)."""
    parts = [("[Content_Types].xml", CONTENT_TYPES.encode()), ("_rels/.rels", ROOT_RELS.encode()),
             ("word/document.xml", DOCUMENT.encode()),
             ("word/_rels/document.xml.rels", DOCUMENT_RELS.encode()),
             ("word/vbaProject.bin", cfb(vba_streams(source=source)))]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()
