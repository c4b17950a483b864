"""From raw reports to behaviours and a score, the same way for every backend.

A report (speakeasy's, CAPE's, or the static facts of a PE or an Office document) is first
turned into :class:`Observations` (API calls, network indicators, files written, registry
keys, processes, ...). Declared :data:`HEURISTICS` then fire on those observations; each
fires at most once per file and adds its points. The score is the sum, capped at 100; the
severity is the score's band (:func:`pcapwire.workflow.severity_for_score`). The table in
``plugins/sandbox/README.md`` is this module's :data:`HEURISTICS` (a test keeps them equal),
so a score never drifts from its documentation (Assemblyline's declared heuristics).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from pcapwire.workflow import severity_for_score


@dataclass(frozen=True)
class Heuristic:
    id: str
    points: int
    description: str


HEURISTICS: dict[str, Heuristic] = {h.id: h for h in (
    # behaviour seen by emulation (local) or in the sandbox run (CAPE)
    Heuristic("network.download", 30, "fetches content over the network (URLDownloadToFile, "
              "WinINet or WinHTTP requests; HTTP requests in CAPE's capture)"),
    Heuristic("network.contact", 15, "names a network destination: a DNS lookup, a URL or "
              "an IP address"),
    Heuristic("persistence.autorun_write", 50, "creates or writes an autorun registry key "
              "(Run, RunOnce, Winlogon, services, Image File Execution Options, ...)"),
    Heuristic("persistence.autorun_key", 30, "opens or reads an autorun registry key "
              "(without writing it)"),
    Heuristic("registry.write", 10, "creates, writes or deletes other registry keys"),
    Heuristic("file.write", 10, "creates or writes files"),
    Heuristic("file.write_executable", 20, "writes a file with an executable or script "
              "extension (.exe, .dll, .scr, .bat, .ps1, .vbs, .js, ...)"),
    Heuristic("process.create", 25, "starts a process or runs a command"),
    Heuristic("process.injection", 40, "allocates or writes memory in, or starts a thread "
              "in, another process"),
    Heuristic("code.dynamic", 20, "executes code generated at run time"),
    Heuristic("evasion.anti_debug", 10, "checks for a debugger"),
    # static analysis of PE files
    Heuristic("pe.packed", 20, "a PE section has entropy >= 7.2 (packed or encrypted)"),
    Heuristic("pe.imports_download", 15, "imports download functions (static; only when "
              "the PE was not emulated)"),
    Heuristic("pe.imports_injection", 20, "imports process-injection functions (static; "
              "only when not emulated)"),
    Heuristic("pe.imports_process", 10, "imports process-creation functions (static; only "
              "when not emulated)"),
    Heuristic("pe.no_imports", 10, "imports no function (resolves its API at run time)"),
    # static analysis of Office documents (olevba)
    Heuristic("office.macros", 20, "contains VBA or Excel 4 (XLM) macros"),
    Heuristic("office.autoexec", 30, "a macro runs automatically (AutoOpen, Document_Open, "
              "Workbook_Open, Auto_Open, ...)"),
    Heuristic("office.suspicious", 25, "macro keywords olevba flags as suspicious (Shell, "
              "CreateObject, URLDownloadToFile, file or registry writes, ...)"),
    Heuristic("office.ioc", 15, "indicators in macro code (URLs, IP addresses, "
              "executable file names)"),
    Heuristic("office.obfuscation", 10, "obfuscated strings in macro code (hex, base64, "
              "Dridex, VBA string expressions)"),
    # static analysis of PDF documents (names as pdfid counts them, compressed objects too)
    Heuristic("pdf.javascript", 30, "contains JavaScript (/JS, /JavaScript)"),
    Heuristic("pdf.auto_action", 20, "runs an action when opened or when a page is shown "
              "(/OpenAction, /AA)"),
    Heuristic("pdf.launch", 40, "has a /Launch action (starts a program or opens a file)"),
    Heuristic("pdf.embedded_file", 20, "carries embedded files (/EmbeddedFile)"),
    Heuristic("pdf.active_content", 10, "has Flash, XFA forms or form submission "
              "(/RichMedia, /XFA, /SubmitForm)"),
    Heuristic("pdf.hidden_names", 15, "spells one of these names with #xx escapes "
              "(e.g. /J#61vaScript), which only evasion needs"),
    # OLE objects embedded in RTF documents (oletools' rtfobj)
    Heuristic("rtf.object", 15, "embeds OLE objects (\\objdata)"),
    Heuristic("rtf.package", 30, "embeds a file in an OLE Package object (dropped when "
              "the object is opened)"),
    Heuristic("rtf.exploit", 50, "embeds an object of a class known from exploits "
              "(Equation Editor, OLE2Link, CLSIDs oletools ties to a CVE)"),
    # CAPE's own signatures (severity 1-3, as CAPE rates them)
    Heuristic("cape.signature_high", 40, "a CAPE signature of severity 3 or more matched"),
    Heuristic("cape.signature_medium", 20, "a CAPE signature of severity 2 matched"),
    Heuristic("cape.signature_low", 5, "a CAPE signature of severity 1 matched"),
)}
#: Minimum score from CAPE's own ``malscore`` (0-10): ``round(malscore * 10)``.
CAPE_MALSCORE_FACTOR = 10
#: Entropy from which a PE section counts as packed.
PACKED_ENTROPY = 7.2
#: Items listed per behaviour and per evidence list (counts stay exact).
MAX_ITEMS = 64
#: Distinct API names listed in evidence.
MAX_API_NAMES = 256

EXECUTABLE_EXTENSIONS = frozenset(
    ".exe .dll .scr .sys .com .pif .cpl .ocx .bat .cmd .ps1 .psm1 .vbs .vbe .js .jse .wsf "
    ".wsh .hta .lnk .msi .jar".split())
AUTORUN_KEY = re.compile(
    r"\\software\\(wow6432node\\)?microsoft\\windows\\currentversion\\"
    r"(run|runonce|runonceex|runservices|runservicesonce|policies\\explorer\\run)(\\|$)"
    r"|\\software\\(wow6432node\\)?microsoft\\windows nt\\currentversion\\"
    r"(winlogon|image file execution options|windows)(\\|$)"
    r"|\\system\\(currentcontrolset|controlset\d{3})\\services(\\|$)", re.I)
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]{1,15}://[^\s\"'<>]+$", re.I)

# API classes, by function name without the A/W suffix, lower case
DOWNLOAD_APIS = frozenset({"urldownloadtofile", "urldownloadtocachefile", "urlopenstream",
                           "urlopenblockingstream", "internetopenurl", "internetreadfile",
                           "httpopenrequest", "httpsendrequest", "httpsendrequestex",
                           "winhttpopenrequest", "winhttpsendrequest", "winhttpreaddata",
                           "bitsadmin"})
NETWORK_APIS = frozenset({"internetconnect", "internetopen", "winhttpconnect", "winhttpopen",
                          "connect", "wsaconnect", "gethostbyname", "getaddrinfo",
                          "getaddrinfow", "dnsquery_", "dnsquery", "send", "sendto",
                          "inet_addr"})
PROCESS_APIS = frozenset({"createprocess", "createprocessasuser", "createprocesswithlogon",
                          "createprocesswithtoken", "createprocessinternal", "winexec",
                          "shellexecute", "shellexecuteex", "system", "_wsystem",
                          "ntcreateuserprocess", "rtlcreateuserprocess"})
INJECTION_APIS = frozenset({"writeprocessmemory", "createremotethread", "createremotethreadex",
                            "virtualallocex", "virtualprotectex", "queueuserapc",
                            "setthreadcontext", "ntwritevirtualmemory", "zwwritevirtualmemory",
                            "ntcreatethreadex", "rtlcreateuserthread", "ntmapviewofsection",
                            "zwmapviewofsection", "ntqueueapcthread"})
ANTI_DEBUG_APIS = frozenset({"isdebuggerpresent", "checkremotedebuggerpresent"})
REGISTRY_KEY_APIS = frozenset({"regopenkey", "regopenkeyex", "regcreatekey", "regcreatekeyex",
                               "regdeletekey", "regdeletekeyex", "regsetkeyvalue",
                               "regdeletetree"})
FILE_WRITE_APIS = frozenset({"writefile", "movefile", "movefileex", "copyfile", "copyfileex",
                             "deletefile"})
NOTABLE_APIS = (DOWNLOAD_APIS | NETWORK_APIS | PROCESS_APIS | INJECTION_APIS | ANTI_DEBUG_APIS
                | REGISTRY_KEY_APIS | FILE_WRITE_APIS
                | {"createfile", "regsetvalue", "regsetvalueex", "regqueryvalueex",
                   "regqueryvalue"})

HIVE_HANDLES = {0x80000000: "HKCR", 0x80000001: "HKCU", 0x80000002: "HKLM",
                0x80000003: "HKU", 0x80000005: "HKCC"}
HIVE_NAMES = {"hkey_classes_root": "HKCR", "hkey_current_user": "HKCU",
              "hkey_local_machine": "HKLM", "hkey_users": "HKU", "hkey_current_config": "HKCC",
              "hkcr": "HKCR", "hkcu": "HKCU", "hklm": "HKLM", "hku": "HKU", "hkcc": "HKCC",
              "registry\\machine": "HKLM", "registry\\user": "HKU"}
REGISTRY_OPS = {"open_key": "open", "create_key": "create", "read_value": "read",
                "list_subkeys": "list", "write_value": "write", "delete_key": "delete"}
WRITE_OPS = frozenset({"create", "write", "delete"})


def api_base(name: str) -> str:
    """``"urlmon.URLDownloadToFileA"`` -> ``"urldownloadtofile"``."""
    func = name.rsplit(".", 1)[-1].rsplit("!", 1)[-1]
    if len(func) > 2 and func[-1] in "AW" and func[-2].islower():
        func = func[:-1]
    return func.lower()


def hive_of(arg: Any) -> str | None:
    """The short hive name of a predefined key handle (``"0xffffffff80000002"``) or name."""
    if isinstance(arg, str) and arg.lower().startswith("0x"):
        try:
            return HIVE_HANDLES.get(int(arg, 16) & 0xFFFFFFFF)
        except ValueError:
            return None
    if isinstance(arg, str):
        return HIVE_NAMES.get(arg.strip("\\").lower())
    return None


def normalize_key(path: str, hive: str | None = None) -> str:
    """``HKEY_LOCAL_MACHINE\\Software\\...`` -> ``HKLM\\Software\\...``; a path without a
    hive gets ``hive`` when known."""
    p = path.replace("/", "\\").strip("\\")
    low = p.lower()
    for long, short in sorted(HIVE_NAMES.items(), key=lambda kv: -len(kv[0])):
        if low == long or low.startswith(long + "\\"):
            return short + p[len(long):]
    return f"{hive}\\{p}" if hive else p


def is_autorun(key: str) -> bool:
    return bool(AUTORUN_KEY.search("\\" + key.strip("\\")))


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def _add(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)


@dataclass
class Observations:
    """What a file did (or, statically, what it contains), backend-independent."""

    api_calls: dict[str, int] = field(default_factory=dict)  # name -> calls, first seen first
    notable_calls: list[dict[str, Any]] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    files_written: list[str] = field(default_factory=list)
    dropped_files: list[dict[str, Any]] = field(default_factory=list)
    registry: list[dict[str, str]] = field(default_factory=list)  # {"op", "key"}
    processes: list[str] = field(default_factory=list)
    injection: list[str] = field(default_factory=list)
    dynamic_code: list[str] = field(default_factory=list)
    anti_debug: list[str] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        names = list(self.api_calls.items())
        return {"api_calls": [{"api": n, "count": c} for n, c in names[:MAX_API_NAMES]],
                "api_calls_distinct": len(names),
                "notable_calls": self.notable_calls[:MAX_ITEMS],
                "network": {"dns": self.dns[:MAX_ITEMS], "urls": self.urls[:MAX_ITEMS],
                            "ips": self.ips[:MAX_ITEMS]},
                "files_written": self.files_written[:MAX_ITEMS],
                "dropped_files": self.dropped_files[:MAX_ITEMS],
                "registry": self.registry[:MAX_ITEMS],
                "processes": self.processes[:MAX_ITEMS],
                "injection": self.injection[:MAX_ITEMS]}


class Findings:
    """Heuristics fired for one file (each at most once)."""

    def __init__(self) -> None:
        self.fired: dict[str, list[Any]] = {}

    def fire(self, hid: str, evidence: list[Any] | None = None) -> None:
        if hid not in HEURISTICS:
            raise KeyError(f"undeclared heuristic {hid!r}")
        items = self.fired.setdefault(hid, [])
        for e in evidence or []:
            _add(items, e)

    def score(self, floor: int = 0) -> int:
        return min(100, max(floor, sum(HEURISTICS[h].points for h in self.fired)))

    def to_list(self) -> list[dict[str, Any]]:
        return [{"id": h, "points": HEURISTICS[h].points,
                 "description": HEURISTICS[h].description, "evidence": ev[:MAX_ITEMS]}
                for h, ev in self.fired.items()]


def grade(findings: Findings, floor: int = 0) -> tuple[int, str]:
    score = findings.score(floor)
    return score, severity_for_score(score)


# ---- speakeasy --------------------------------------------------------------------------
def _string_args(args: list[Any]) -> list[str]:
    return [a for a in args if isinstance(a, str) and not a.lower().startswith("0x")]


def from_speakeasy(report: dict[str, Any]) -> Observations:
    obs = Observations()
    eps = report.get("entry_points", [])
    hives: dict[str, str] = {}
    for ep in eps:
        for call in ep.get("apis") or []:
            name = str(call.get("api_name", ""))
            args = list(call.get("args") or [])
            obs.api_calls[name] = obs.api_calls.get(name, 0) + 1
            base = api_base(name)
            strings = _string_args(args)
            for s in strings:
                if URL_RE.match(s):
                    _add(obs.urls, s)
                elif ip := _ip(s):
                    _add(obs.ips, ip)
            if base in NOTABLE_APIS and len(obs.notable_calls) < MAX_ITEMS:
                obs.notable_calls.append({"api": name, "args": args, "ret": call.get("ret_val")})
            if base in DOWNLOAD_APIS:
                _add(obs.downloads, f"{name}({', '.join(strings[:2])})")
            if base in PROCESS_APIS:
                _add(obs.processes, strings[0] if strings else name)
            if base in INJECTION_APIS:
                _add(obs.injection, name)
            if base in ANTI_DEBUG_APIS:
                _add(obs.anti_debug, name)
            if base in REGISTRY_KEY_APIS and len(args) >= 2 and isinstance(args[1], str):
                hive = hive_of(args[0])
                if hive:
                    hives[args[1].strip("\\").lower()] = hive
    for ep in eps:
        net = ep.get("network_events") or {}
        for q in net.get("dns") or []:
            _add(obs.dns, str(q.get("query", "")))
            if q.get("response") and (ip := _ip(str(q["response"]))):
                _add(obs.ips, ip)
        for t in net.get("traffic") or []:
            server = str(t.get("server", ""))
            if ip := _ip(server):
                _add(obs.ips, ip)
            elif server:
                _add(obs.dns, server)
            proto = str(t.get("proto", ""))
            if proto.endswith(("http", "https")) and server:
                scheme = "https" if proto.endswith("https") else "http"
                _add(obs.urls, f"{scheme}://{server}:{t.get('port')}")
        for fa in ep.get("file_access") or []:
            if fa.get("event") in ("create", "write"):
                _add(obs.files_written, str(fa.get("path", "")))
        for df in ep.get("dropped_files") or []:
            _add(obs.dropped_files, {k: df.get(k) for k in ("path", "size", "sha256")})
        for ra in ep.get("registry_access") or []:
            path = str(ra.get("path", ""))
            key = normalize_key(path, hives.get(path.strip("\\").lower()))
            _add(obs.registry, {"op": REGISTRY_OPS.get(str(ra.get("event")), str(ra.get("event"))),
                                "key": key})
        for pe_ in ep.get("process_events") or []:
            event = pe_.get("event")
            if event == "create":
                _add(obs.processes, str(pe_.get("cmdline") or pe_.get("path") or ""))
            elif event in ("mem_write", "thread_inject", "mem_alloc"):
                _add(obs.injection, f"{event} pid {pe_.get('pid')} {pe_.get('path', '')}")
        for seg in ep.get("dynamic_code_segments") or []:
            _add(obs.dynamic_code, f"{seg.get('tag')} at {seg.get('base')}")
    return obs


def behaviour_findings(obs: Observations, findings: Findings) -> None:
    """Fire the behaviour heuristics on ``obs`` (any backend)."""
    if obs.downloads:
        findings.fire("network.download", obs.downloads)
    if obs.dns or obs.urls or obs.ips:
        findings.fire("network.contact", obs.dns + obs.urls + obs.ips)
    autorun = [r for r in obs.registry if is_autorun(r["key"])]
    autorun_writes = [r["key"] for r in autorun if r["op"] in WRITE_OPS]
    if autorun_writes:
        findings.fire("persistence.autorun_write", autorun_writes)
    elif autorun:
        findings.fire("persistence.autorun_key", [r["key"] for r in autorun])
    other_writes = [r["key"] for r in obs.registry
                    if r["op"] in WRITE_OPS and not is_autorun(r["key"])]
    if other_writes:
        findings.fire("registry.write", other_writes)
    if obs.files_written:
        findings.fire("file.write", obs.files_written)
        exe = [p for p in obs.files_written
               if "." + p.rsplit(".", 1)[-1].lower() in EXECUTABLE_EXTENSIONS]
        if exe:
            findings.fire("file.write_executable", exe)
    if obs.processes:
        findings.fire("process.create", obs.processes)
    if obs.injection:
        findings.fire("process.injection", obs.injection)
    if obs.dynamic_code:
        findings.fire("code.dynamic", obs.dynamic_code)
    if obs.anti_debug:
        findings.fire("evasion.anti_debug", obs.anti_debug)


# ---- static PE --------------------------------------------------------------------------
def pe_findings(pe: dict[str, Any], findings: Findings, *, emulated: bool) -> None:
    packed = [f"{s['name']} entropy {s['entropy']}" for s in pe.get("sections", [])
              if s.get("entropy", 0) >= PACKED_ENTROPY]
    if packed:
        findings.fire("pe.packed", packed)
    if not pe.get("import_count") and not pe.get("is_dotnet"):
        findings.fire("pe.no_imports")
    if emulated:
        return
    imports = pe.get("imports", [])
    for hid, names in (("pe.imports_download", DOWNLOAD_APIS),
                       ("pe.imports_injection", INJECTION_APIS),
                       ("pe.imports_process", PROCESS_APIS)):
        hits = [i for i in imports if api_base(i) in names]
        if hits:
            findings.fire(hid, hits)


def pe_summary(pe: dict[str, Any]) -> dict[str, Any]:
    keep = ("machine", "is_dll", "is_driver", "is_dotnet", "timestamp", "imphash", "subsystem",
            "sections", "import_count", "exports", "warnings")
    out = {k: pe[k] for k in keep if k in pe}
    out["imports"] = pe.get("imports", [])[:MAX_API_NAMES]
    return out


# ---- Office (olevba) --------------------------------------------------------------------
OBFUSCATION_TYPES = frozenset({"hex string", "base64 string", "dridex string", "vba string"})


def office_findings(office: dict[str, Any], findings: Findings) -> None:
    if office.get("vba") or office.get("xlm"):
        findings.fire("office.macros", [m["name"] for m in office.get("modules", [])])
    by_type: dict[str, list[str]] = {}
    for item in office.get("analysis", []):
        by_type.setdefault(str(item["type"]).lower(), []).append(str(item["keyword"]))
    if by_type.get("autoexec"):
        findings.fire("office.autoexec", by_type["autoexec"])
    if by_type.get("suspicious"):
        findings.fire("office.suspicious", by_type["suspicious"])
    if by_type.get("ioc"):
        findings.fire("office.ioc", by_type["ioc"])
    obf = [k for t, ks in by_type.items() if t in OBFUSCATION_TYPES for k in ks]
    if obf:
        findings.fire("office.obfuscation", obf)


# ---- PDF (worker.pdf_facts) -------------------------------------------------------------
PDF_HEURISTICS = (("pdf.javascript", ("/JS", "/JavaScript")),
                  ("pdf.auto_action", ("/OpenAction", "/AA")),
                  ("pdf.launch", ("/Launch",)),
                  ("pdf.embedded_file", ("/EmbeddedFile",)),
                  ("pdf.active_content", ("/RichMedia", "/XFA", "/SubmitForm")))


def pdf_findings(pdf: dict[str, Any], findings: Findings) -> None:
    counts = pdf.get("keywords", {})
    for hid, names in PDF_HEURISTICS:
        seen = [f"{n} x{counts[n]}" for n in names if counts.get(n)]
        if seen:
            findings.fire(hid, seen)
    hidden = pdf.get("hex_escaped_names") or {}
    if hidden:
        findings.fire("pdf.hidden_names", [f"{n} x{c}" for n, c in hidden.items()])
    uris = pdf.get("uris") or []
    if uris:
        findings.fire("network.contact", uris[:MAX_ITEMS])


# ---- RTF (worker.rtf_facts) -------------------------------------------------------------
def rtf_findings(rtf: dict[str, Any], findings: Findings) -> None:
    objects = rtf.get("objects", [])
    if objects:
        findings.fire("rtf.object", [o["class"] or "(not OLE 1.0)" for o in objects])
    packages = [o["package"]["filename"] or "(no name)" for o in objects if "package" in o]
    if packages:
        findings.fire("rtf.package", packages)
    exploits = [f"{o['class']}: {o['exploit']}" for o in objects if o.get("exploit")]
    if exploits:
        findings.fire("rtf.exploit", exploits)


# ---- CAPE -------------------------------------------------------------------------------
def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def from_cape(report: dict[str, Any]) -> Observations:
    """Observations from a CAPEv2 ``report.json`` (``network``, ``behavior.summary``)."""
    obs = Observations()
    net = report.get("network") or {}
    for d in _list(net.get("dns")):
        if isinstance(d, dict) and d.get("request"):
            _add(obs.dns, str(d["request"]))
            for ans in _list(d.get("answers")):
                if isinstance(ans, dict) and (ip := _ip(str(ans.get("data", "")))):
                    _add(obs.ips, ip)
    for d in _list(net.get("domains")):
        if isinstance(d, dict) and d.get("domain"):
            _add(obs.dns, str(d["domain"]))
    for h in _list(net.get("hosts")):
        ip = _ip(str(h.get("ip", "") if isinstance(h, dict) else h))
        if ip:
            _add(obs.ips, ip)
    for h in _list(net.get("http")) + _list(net.get("https")):
        if not isinstance(h, dict):
            continue
        uri = str(h.get("uri") or "")
        if not URL_RE.match(uri):
            host, path = h.get("host") or h.get("dst") or "", h.get("path") or uri or "/"
            uri = f"http://{host}{path}" if host else ""
        if uri:
            _add(obs.urls, uri)
            _add(obs.downloads, f"{h.get('method') or 'GET'} {uri}")
    summary = (report.get("behavior") or {}).get("summary") or {}
    for path in _list(summary.get("write_files")):
        _add(obs.files_written, str(path))
    for op, key in (("write", "write_keys"), ("delete", "delete_keys")):
        for k in _list(summary.get(key)):
            _add(obs.registry, {"op": op, "key": normalize_key(str(k))})
    for k in _list(summary.get("keys")) + _list(summary.get("read_keys")):
        if is_autorun(normalize_key(str(k))):
            _add(obs.registry, {"op": "open", "key": normalize_key(str(k))})
    for cmd in _list(summary.get("executed_commands")):
        _add(obs.processes, str(cmd))
    return obs


def cape_findings(report: dict[str, Any], findings: Findings) -> tuple[list[dict[str, Any]], int]:
    """Fire CAPE signature heuristics; returns (signatures as evidence, score floor)."""
    sigs = []
    for s in _list(report.get("signatures")):
        if not isinstance(s, dict):
            continue
        try:
            sev = int(s.get("severity", 1))
        except (TypeError, ValueError):
            sev = 1
        sigs.append({"name": s.get("name", ""), "description": s.get("description", ""),
                     "severity": sev, "confidence": s.get("confidence")})
        hid = ("cape.signature_high" if sev >= 3 else "cape.signature_medium" if sev == 2
               else "cape.signature_low")
        findings.fire(hid, [s.get("name", "")])
    try:
        malscore = float(report.get("malscore") or 0)
    except (TypeError, ValueError):
        malscore = 0.0
    floor = max(0, min(100, round(malscore * CAPE_MALSCORE_FACTOR)))
    return sigs, floor
