"""The analysis process of the ``local`` backend: ``python -I worker.py
JOB.json``.

Everything that parses or emulates a hostile file runs here, in a process of its own with
resource limits (address space, CPU time, file size, no core dumps), started and killed by
:mod:`pcapwire.plugins.sandbox.local`. The sample is read as bytes and handed to the parsers
and to speakeasy's emulator (``load_module(data=...)``): it is never written anywhere
executable and never executed on the host.

The job file (JSON) names the ``sample``, the ``result`` path and the ``limits``. The
result (JSON, written atomically) holds raw facts only; scoring happens in the parent
(:mod:`pcapwire.plugins.sandbox.scoring`)::

    {"kind": "pe" | "office" | "pdf" | "rtf" | "other",
     "file_type": {"mime": ..., "description": ...},
     "pe": {...}, "office": {...}, "pdf": {...}, "rtf": {...},
     "emulation": {"report": {...}} | {"skipped": reason}
                                               | {"error": {"stage": ..., "message": ...}},
     "errors": [{"stage": ..., "message": ...}]}

This module imports nothing from pcapwire, so the process starts fast.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import resource
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

#: Bytes of the head of a file given to libmagic.
MAGIC_BYTES = 1024 * 1024
#: PE machine types speakeasy emulates (IMAGE_FILE_MACHINE_I386, _AMD64).
EMULATED_MACHINES = {0x14C: "i386", 0x8664: "amd64"}
#: Imported functions listed per PE (the count is exact).
MAX_IMPORTS = 2000
#: Characters of each VBA module's source kept in the result.
MAX_MACRO_EXCERPT = 2048
#: VBA modules listed per document.
MAX_MACRO_MODULES = 32
#: Lines kept from a speakeasy traceback.
MAX_TRACEBACK_LINES = 12
#: A PDF header may start this far into the file (as PDF readers accept it).
PDF_HEADER_WINDOW = 1024
#: Bytes inflated from one PDF stream, and from all of a file's streams together, to look
#: for names hidden in compressed objects (object streams); beyond them the rest is not
#: inflated and the result says so (a decompression bomb stops here).
MAX_PDF_STREAM_INFLATE = 8 * 2**20
MAX_PDF_INFLATE = 64 * 2**20
#: Streams inflated per file.
MAX_PDF_STREAMS = 10_000
#: URIs listed per PDF (the count is exact).
MAX_PDF_URIS = 32
#: RTF objects described per file (the count is exact).
MAX_RTF_OBJECTS = 64
#: PDF names counted (pdfid's list): what a malicious PDF needs to act.
PDF_KEYWORDS = ("/JS", "/JavaScript", "/AA", "/OpenAction", "/Launch", "/EmbeddedFile",
                "/RichMedia", "/XFA", "/AcroForm", "/URI", "/SubmitForm", "/GoToR",
                "/ObjStm", "/Encrypt", "/JBIG2Decode")


def _error(stage: str, exc: BaseException) -> dict[str, str]:
    return {"stage": stage, "message": f"{type(exc).__name__}: {exc}"}


def _limit_resources(limits: dict[str, Any]) -> None:
    mem = int(limits.get("memory_mb", 0)) * 2**20
    if mem:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = int(limits.get("cpu_seconds", 0))
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    fsize = int(limits.get("max_result_bytes", 0))
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def file_type(data: bytes) -> dict[str, str]:
    import magic

    head = data[:MAGIC_BYTES]
    try:
        return {"mime": magic.from_buffer(head, mime=True),
                "description": magic.from_buffer(head)}
    except Exception as exc:  # libmagic refuses some inputs
        return {"mime": "application/octet-stream", "description": f"unknown ({exc})"}


def office_container(data: bytes) -> str | None:
    """The Office container format of ``data`` (what olevba can open), or None."""
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return "ole"
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, ValueError, OSError):
            return None
        return "ooxml" if "[Content_Types].xml" in names else None
    head = data[:65536]
    if head.startswith(b"ID;"):
        return "slk"
    if b"http://schemas.microsoft.com/office/word/2003/wordml" in head:
        return "word2003xml"
    if b"http://schemas.microsoft.com/office/2006/xmlPackage" in head:
        return "flatopc"
    lower = head.lower()
    if b"mime-version" in lower and b"multipart" in lower and b"<html" not in lower[:512]:
        return "mht"
    return None


def classify(data: bytes) -> str:
    if data[:2] == b"MZ" and len(data) >= 64:
        e_lfanew = int.from_bytes(data[60:64], "little")
        if data[e_lfanew:e_lfanew + 4] == b"PE\0\0":
            return "pe"
    if office_container(data):
        return "office"
    if b"%PDF-" in data[:PDF_HEADER_WINDOW]:
        return "pdf"
    if data[:4] == b"{\\rt":  # what Word opens as RTF (oletools' is_rtf)
        return "rtf"
    return "other"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.rstrip(b"\0").decode("latin-1")
    return "" if value is None else str(value)


def rtf_facts(data: bytes) -> dict[str, Any]:
    """The OLE objects embedded in an RTF document (oletools' rtfobj): class, size,
    OLE Package contents (the file it drops), CLSID, and the exploit each is known for."""
    from oletools.rtfobj import RtfObjParser

    parser = RtfObjParser(data)
    parser.parse()
    objects = []
    for obj in parser.objects[:MAX_RTF_OBJECTS]:
        cls = _text(obj.class_name) if obj.is_ole else ""
        item: dict[str, Any] = {"offset": obj.start, "ole": bool(obj.is_ole), "class": cls,
                                "size": len(obj.rawdata or b"")}
        if obj.is_package:
            item["package"] = {"filename": _text(obj.filename),
                               "source_path": _text(obj.src_path),
                               "size": len(obj.olepkgdata or b"")}
        if obj.clsid:
            item["clsid"], item["clsid_description"] = obj.clsid, obj.clsid_desc
        exploit = ""
        if cls.lower().startswith("equation.3"):
            exploit = "Equation Editor (CVE-2017-11882, CVE-2018-0802)"
        elif cls == "OLE2Link":
            exploit = "OLE2Link (CVE-2017-0199)"
        elif obj.clsid_desc and "CVE" in obj.clsid_desc:
            exploit = str(obj.clsid_desc)
        if exploit:
            item["exploit"] = exploit
        objects.append(item)
    return {"objects": objects, "object_count": len(parser.objects)}


_PDF_NAME = re.compile(rb"/[^\x00\t\n\f\r ()<>\[\]{}/%]+")
_PDF_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
_PDF_STREAM = re.compile(rb"(?<!end)stream\r?\n")
_PDF_URI = re.compile(rb"/URI\s*\(((?:[^()\\]|\\.){1,2048})\)")


def _pdf_names(blob: bytes, counts: dict[str, int], hidden: dict[str, int]) -> None:
    """Count the PDF_KEYWORDS among the names in ``blob``; a name spelt with ``#xx``
    escapes (``/J#61vaScript``) counts as what it decodes to, and in ``hidden`` too."""
    for m in _PDF_NAME.finditer(blob):
        raw = m.group()
        name = _PDF_HEX.sub(lambda h: bytes([int(h.group(1), 16)]), raw) if b"#" in raw \
            else raw
        key = name.decode("latin-1")
        if key in counts:
            counts[key] += 1
            if name != raw:
                hidden[key] = hidden.get(key, 0) + 1


def pdf_facts(data: bytes) -> dict[str, Any]:
    """What pdfid reports (keyword counts), plus the same count inside every stream that
    inflates with zlib (FlateDecode: object streams hide names there), the URIs, and
    names obfuscated with ``#xx`` escapes. ``limits`` names every MAX_PDF_* limit that
    stopped the inflating (``streams_cut``: streams cut at the per-stream one)."""
    start = data.find(b"%PDF-", 0, PDF_HEADER_WINDOW)
    counts = dict.fromkeys(PDF_KEYWORDS, 0)
    hidden: dict[str, int] = {}
    _pdf_names(data, counts, hidden)
    inflated_total, streams, cut, limits = 0, 0, 0, []
    for m in _PDF_STREAM.finditer(data):
        if streams >= MAX_PDF_STREAMS:
            limits.append("MAX_PDF_STREAMS")
            break
        if inflated_total >= MAX_PDF_INFLATE:
            limits.append("MAX_PDF_INFLATE")
            break
        end = data.find(b"endstream", m.end())
        body = data[m.end():end if end >= 0 else len(data)]
        d = zlib.decompressobj()
        try:
            out = d.decompress(body, min(MAX_PDF_STREAM_INFLATE,
                                         MAX_PDF_INFLATE - inflated_total))
        except zlib.error:
            continue  # not FlateDecode (or damaged): its raw bytes were scanned already
        streams += 1
        inflated_total += len(out)
        _pdf_names(out, counts, hidden)
        if d.unconsumed_tail:
            if len(out) < MAX_PDF_STREAM_INFLATE:  # cut by what was left of the total
                limits.append("MAX_PDF_INFLATE")
                break
            cut += 1
    if cut:
        limits.insert(0, "MAX_PDF_STREAM_INFLATE")
    uris = [u.group(1).decode("latin-1") for u in _PDF_URI.finditer(data)]
    return {"version": data[start + 5:start + 8].decode("latin-1", "replace"),
            "keywords": {k: v for k, v in counts.items() if v},
            "hex_escaped_names": hidden, "streams_inflated": streams,
            "bytes_inflated": inflated_total, "streams_cut": cut, "limits": limits,
            "uris": uris[:MAX_PDF_URIS], "uri_count": len(uris)}


def _entropy(blob: bytes) -> float:
    if not blob:
        return 0.0
    counts = [0] * 256
    for b in blob:
        counts[b] += 1
    n = len(blob)
    return -sum(c / n * math.log2(c / n) for c in counts if c)


def static_pe(data: bytes) -> dict[str, Any]:
    import pefile

    pe = pefile.PE(data=data, fast_load=True)
    try:
        pe.parse_data_directories(directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
        machine = pe.FILE_HEADER.Machine
        com = pe.OPTIONAL_HEADER.DATA_DIRECTORY[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_COM_DESCRIPTOR"]]
        imports: list[str] = []
        total = 0
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
            dll = entry.dll.decode("ascii", "replace")
            for imp in entry.imports:
                total += 1
                if len(imports) < MAX_IMPORTS:
                    name = imp.name.decode("ascii", "replace") if imp.name else f"#{imp.ordinal}"
                    imports.append(f"{dll}!{name}")
        sections = []
        for s in pe.sections:
            raw = s.get_data()
            sections.append({"name": s.Name.rstrip(b"\0").decode("ascii", "replace"),
                             "virtual_size": s.Misc_VirtualSize, "raw_size": len(raw),
                             "entropy": round(max(0.0, _entropy(raw)), 3),
                             "executable": bool(s.Characteristics & 0x20000000)})
        exports = [e.name.decode("ascii", "replace") for e in
                   getattr(getattr(pe, "DIRECTORY_ENTRY_EXPORT", None), "symbols", [])
                   if e.name][:200]
        try:
            imphash = pe.get_imphash()
        except Exception:
            imphash = ""
        return {"machine": EMULATED_MACHINES.get(machine, hex(machine)),
                "machine_id": machine, "is_dll": pe.is_dll(), "is_driver": pe.is_driver(),
                "is_dotnet": bool(com.VirtualAddress and com.Size),
                "timestamp": pe.FILE_HEADER.TimeDateStamp, "imphash": imphash,
                "subsystem": pe.OPTIONAL_HEADER.Subsystem, "sections": sections,
                "imports": imports, "import_count": total, "exports": exports,
                "warnings": pe.get_warnings()[:20]}
    finally:
        pe.close()


def emulation_refusal(pe: dict[str, Any]) -> str | None:
    """Why a PE is analysed statically instead of being emulated (None: emulate it)."""
    if pe["machine_id"] not in EMULATED_MACHINES:
        return f"machine {pe['machine']} is not x86/x64 (speakeasy emulates only those)"
    if pe["is_dotnet"]:
        return ".NET assembly: managed code is not emulated"
    return None


def _trim_error(err: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in err.items() if k not in ("regs", "stack")}
    if "traceback" in out:
        lines = str(out["traceback"]).rstrip().splitlines()
        out["traceback"] = "\n".join(lines[-MAX_TRACEBACK_LINES:])
    return out


def _drop_data(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "data"} for e in events]


def trim_report(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a speakeasy report that become evidence (no strings, no memory maps,
    no data buffers)."""
    keep = ("arch", "filetype", "emu_version", "os_run", "emulation_total_runtime", "sha256")
    out: dict[str, Any] = {k: report[k] for k in keep if k in report}
    eps = []
    for ep in report.get("entry_points", []):
        e = {k: ep[k] for k in ("ep_type", "start_addr", "ret_val", "apis", "network_events",
                                "dynamic_code_segments", "dropped_files") if k in ep}
        e["error"] = _trim_error(ep.get("error") or {})
        for key in ("file_access", "registry_access", "process_events"):
            if key in ep:
                e[key] = _drop_data(ep[key])
        if ep.get("handled_exceptions"):
            e["handled_exceptions"] = len(ep["handled_exceptions"])
        eps.append(e)
    out["entry_points"] = eps
    return out


def emulate(data: bytes, limits: dict[str, Any], is_dll: bool) -> dict[str, Any]:
    import speakeasy
    from speakeasy.version import __version__ as version

    engine = f"speakeasy {version}"
    cfg_path = Path(speakeasy.__file__).parent / "configs" / "default.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["timeout"] = int(limits["timeout"])  # unicorn 1.0.2 wants an int
    cfg["max_api_count"] = int(limits["max_api_calls"])
    cfg["max_instructions"] = int(limits["max_instructions"]) or -1
    cfg.setdefault("analysis", {})["strings"] = False
    quiet = logging.getLogger("pcapwire.sandbox.speakeasy")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    se = speakeasy.Speakeasy(config=cfg, logger=quiet)
    started = time.monotonic()
    try:
        module = se.load_module(data=data)
    except Exception as exc:
        return {"error": _error("load", exc), "engine": engine}
    try:
        se.run_module(module, all_entrypoints=is_dll)
    except Exception as exc:  # speakeasy records most failures in the report
        return {"error": _error("run", exc), "engine": engine}
    elapsed = time.monotonic() - started
    report = trim_report(se.get_report())
    return {"report": report, "elapsed": round(elapsed, 3),
            "engine": engine}


def office_facts(data: bytes) -> dict[str, Any]:
    from oletools import olevba

    vp = olevba.VBA_Parser("sample", data=data, relaxed=True)
    try:
        facts: dict[str, Any] = {"container": vp.type, "vba": False, "xlm": False,
                                 "modules": [], "analysis": []}
        facts["vba"] = bool(vp.detect_vba_macros())
        try:
            facts["xlm"] = bool(vp.detect_xlm_macros())
        except Exception as exc:  # XLM detection is best effort in oletools
            facts["xlm_error"] = f"{type(exc).__name__}: {exc}"
        if facts["vba"] or facts["xlm"]:
            for _sub, stream, name, code in vp.extract_all_macros():
                if len(facts["modules"]) >= MAX_MACRO_MODULES:
                    break
                code = code or ""
                facts["modules"].append({"stream": stream, "name": name,
                                         "chars": len(code),
                                         "excerpt": code[:MAX_MACRO_EXCERPT]})
            facts["analysis"] = [{"type": t, "keyword": k, "description": d}
                                 for t, k, d in (vp.analyze_macros() or [])]
        return facts
    finally:
        vp.close()


def analyze(data: bytes, limits: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"file_type": file_type(data), "errors": []}
    kind = classify(data)
    out["kind"] = kind
    if kind == "pe":
        try:
            out["pe"] = static_pe(data)
        except Exception as exc:
            out["errors"].append(_error("pefile", exc))
            return out
        reason = emulation_refusal(out["pe"])
        if reason:
            out["emulation"] = {"skipped": reason}
        elif not limits.get("emulate", True):
            out["emulation"] = {"skipped": "emulation turned off (emulate: false)"}
        else:
            out["emulation"] = emulate(data, limits, out["pe"]["is_dll"])
    elif kind == "office":
        try:
            out["office"] = office_facts(data)
        except Exception as exc:
            out["errors"].append(_error("olevba", exc))
    elif kind == "pdf":
        out["pdf"] = pdf_facts(data)
    elif kind == "rtf":
        try:
            out["rtf"] = rtf_facts(data)
        except Exception as exc:
            out["errors"].append(_error("rtfobj", exc))
    return out


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text())
    _limit_resources(job["limits"])
    data = Path(job["sample"]).read_bytes()
    result = analyze(data, job["limits"])
    target = Path(job["result"])
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
