"""The ``sandbox`` analyzer's local backend on real samples.

The samples are harmless C programs in ``tests/samples/`` compiled once per session with
``x86_64-w64-mingw32-gcc`` and emulated by speakeasy in the analyzer's own worker process
(never run on the host); the Office document is built by ``tests/samples/macrodoc.py``.
Nothing is mocked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pcapwire.errors import AnalyzerError
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.hooks.host import build_host
from pcapwire.plugins.sandbox import SandboxAnalyzer, SandboxConfig, scoring
from pcapwire.plugins.sandbox.local import Limits, WorkerError, run_worker
from pcapwire.records import FileRecord, FlowKey, Verdict
from pcapwire.testing import http_download, write_capture
from pcapwire.workflow import RunInfo, StepContext
from pcapwire.workflow.analyzer import check_analyzer
from pcapwire.workflow.document import load_workflow
from pcapwire.workflow.engine import Engine
from pcapwire.workflow.sources import file_chunks
from samples.macrodoc import build_docm

SAMPLES = Path(__file__).parent / "samples"
README = Path(__file__).parents[1] / "plugins" / "sandbox" / "README.md"
CC = "x86_64-w64-mingw32-gcc"
FLOW = FlowKey(6, "10.0.0.1", 49152, "10.0.0.2", 80)
RUN_KEY = "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every tests/samples/*.c compiled to a Windows x64 executable (once per session)."""
    if shutil.which(CC) is None:
        pytest.fail(f"{CC} not found: install the Debian package gcc-mingw-w64-x86-64")
    out = tmp_path_factory.mktemp("pe")
    built = {}
    for src in sorted(SAMPLES.glob("*.c")):
        exe = out / (src.stem + ".exe")
        subprocess.run([CC, "-O1", "-s", "-o", str(exe), str(src), "-lurlmon", "-ladvapi32"],
                       check=True, capture_output=True)
        built[src.stem] = exe.read_bytes()
    built["macro.docm"] = build_docm()
    return built


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def record(store: ArtifactStore, data: bytes, filename: str) -> FileRecord:
    a = store.put(data)
    return FileRecord(id=f"f-{a.sha256[:12]}", sha256=a.sha256, md5=a.md5, sha1=a.sha1,
                      size=a.size, path=a.path, flow=FLOW, ts=1.0, protocol="http",
                      mime_type=a.mime_type, magic=a.magic, filename=filename)


def _analyze_iter(rec: FileRecord, tmp_path: Path, **config):
    async def emit(item) -> None:
        raise AssertionError("the analyzer yields its verdicts")

    ctx = StepContext(run=RunInfo("run-1", "wf"), step="detonate", analyzer="sandbox",
                      config=SandboxConfig.from_mapping(config), workdir=tmp_path / "work",
                      emit_fn=emit)
    return SandboxAnalyzer().analyze(rec, ctx)


async def analyze(rec: FileRecord, tmp_path: Path, **config) -> list[Verdict]:
    return [v async for v in _analyze_iter(rec, tmp_path, **config)]


def test_registered_through_the_entry_point_with_a_strict_config() -> None:
    host = build_host()
    assert "sandbox" in host.analyzers() and not [f for f in host.failures
                                                  if f.name == "sandbox"]
    assert check_analyzer(SandboxAnalyzer) == []
    assert SandboxAnalyzer.input_kinds() == ("file",)
    with pytest.raises(Exception, match="nope"):
        SandboxConfig.from_mapping({"nope": 1})
    with pytest.raises(Exception, match="backend"):
        SandboxConfig.from_mapping({"backend": "cuckoo"})
    cfg = SandboxConfig.from_mapping({"backend": "cape", "cape_url": "http://c",
                                      "cape_token": "s3cret-token"})
    assert "s3cret-token" not in repr(cfg) and cfg.redacted()["cape_token"] == "***"
    assert "default" not in SandboxConfig.json_schema()["properties"]["cape_token"]
    a = SandboxAnalyzer()
    assert a.check_config(SandboxConfig.from_mapping({"backend": "cape"}), None) == [
        "cape_url: required when backend is cape"]
    assert "http(s)" in a.check_config(SandboxConfig.from_mapping(
        {"backend": "cape", "cape_url": "ftp://cape"}), None)[0]
    assert a.check_config(SandboxConfig.from_mapping({}), None) == []


async def test_dropper_verdict_shows_exactly_its_behaviours(samples, artifacts, tmp_path) -> None:
    rec = record(artifacts, samples["dropper"], "dropper.exe")
    (v,) = await analyze(rec, tmp_path)
    ev = v.evidence
    assert (v.analyzer, v.subject_kind, v.subject_id, v.flow) == ("sandbox", "file", rec.id,
                                                                  FLOW)
    assert ev["analysis"] == "emulation" and ev["engine"] == "speakeasy 1.5.11"
    assert ev["network"] == {"dns": ["update.example.invalid"],
                             "urls": ["http://update.example.invalid/payload.bin"], "ips": []}
    assert ev["registry"] == [{"op": "open", "key": RUN_KEY}]
    # the file the program writes, and the one URLDownloadToFileA "downloads" (speakeasy
    # emulates the download by creating the target file)
    assert ev["files_written"] == ["C:\\Users\\Public\\payload.bin",
                                   "C:\\Users\\Public\\pcapwire-test.txt"]
    assert ev["processes"] == [] and ev["injection"] == []
    fired = {b["id"]: b for b in ev["behaviours"]}
    assert list(fired) == ["network.download", "network.contact", "persistence.autorun_key",
                           "file.write"]
    assert fired["persistence.autorun_key"]["evidence"] == [RUN_KEY]
    assert (v.score, v.severity) == (85, "high")
    assert v.signature == ("sandbox: network.download, network.contact, "
                           "persistence.autorun_key, file.write")
    assert v.signature_id == "sandbox.local.emulation"
    assert "incomplete" not in v.tags and "persistence.autorun_key" in v.tags
    calls = {c["api"]: c["args"] for c in ev["notable_calls"]}
    assert calls["urlmon.URLDownloadToFileA"][1:3] == [
        "http://update.example.invalid/payload.bin", "C:\\Users\\Public\\payload.bin"]
    assert calls["ADVAPI32.RegOpenKeyExA"][1] == "Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    assert {"api": "KERNEL32.WriteFile", "count": 1} in ev["api_calls"]
    assert [e["type"] for e in ev["emulation"]["entry_points"]] == [
        "tls_callback_0", "tls_callback_1", "module_entry"]
    assert ev["pe"]["machine"] == "amd64" and "urlmon.dll!URLDownloadToFileA" in ev["pe"]["imports"]
    assert ev["file_type"]["mime"] == "application/vnd.microsoft.portable-executable"


async def test_regcreatekey_on_hkcu_crash_is_a_clear_error(samples, artifacts, tmp_path) -> None:
    rec = record(artifacts, samples["regcreate_hkcu"], "regcreate.exe")
    with pytest.raises(AnalyzerError) as err:
        await analyze(rec, tmp_path)
    msg = str(err.value)
    assert msg.startswith("speakeasy crashed in its advapi32.RegCreateKey API handler while "
                          f"emulating module_entry of file {rec.sha256[:16]}")
    assert "AttributeError: 'NoneType' object has no attribute 'get_path'" in msg
    assert "an emulator bug, not a property of the file" in msg
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


async def test_behaviour_before_an_emulator_crash_is_kept(samples, artifacts, tmp_path) -> None:
    rec = record(artifacts, samples["download_then_crash"], "stage1.exe")
    got: list[Verdict] = []
    with pytest.raises(AnalyzerError, match="speakeasy crashed in its advapi32.RegCreateKey"):
        async for v in _analyze_iter(rec, tmp_path):
            got.append(v)
    (v,) = got  # emitted before the error
    assert [b["id"] for b in v.evidence["behaviours"]] == [
        "network.download", "network.contact", "file.write"]
    assert v.evidence["network"]["urls"] == ["http://cdn.example.invalid/stage2.bin"]
    assert "emulation-error" in v.tags and "incomplete" in v.tags
    assert v.evidence["emulation"]["entry_points"][-1]["stopped"] == (
        "the emulator crashed (see the step's errors)")


async def test_benign_program_scores_zero(samples, artifacts, tmp_path) -> None:
    (v,) = await analyze(record(artifacts, samples["benign"], "benign.exe"), tmp_path)
    assert (v.score, v.severity, v.signature) == (0, "info", "sandbox: nothing suspicious found")
    assert v.evidence["behaviours"] == [] and v.evidence["network"] == {"dns": [], "urls": [],
                                                                        "ips": []}
    assert all("stopped" not in e for e in v.evidence["emulation"]["entry_points"])


async def test_office_autoopen_macro_is_flagged_by_static_analysis(samples, artifacts,
                                                                   tmp_path) -> None:
    assert build_docm() == samples["macro.docm"]  # reproducible byte for byte
    (v,) = await analyze(record(artifacts, samples["macro.docm"], "invoice.docm"), tmp_path)
    ev = v.evidence
    assert ev["analysis"] == "office" and ev["engine"] == "olevba"
    assert ev["file_type"]["description"] == "Microsoft Word 2007+"
    assert [b["id"] for b in ev["behaviours"]] == ["office.macros", "office.autoexec"]
    assert ev["behaviours"][1]["evidence"] == ["AutoOpen"]
    assert (v.score, v.severity) == (50, "medium")
    (module,) = ev["office"]["modules"]
    assert module["stream"] == "VBA/Module1" and "Sub AutoOpen()" in module["excerpt"]


async def test_static_analysis_when_emulation_is_off(samples, artifacts, tmp_path) -> None:
    (v,) = await analyze(record(artifacts, samples["dropper"], "d.exe"), tmp_path,
                         emulate=False)
    ev = v.evidence
    assert ev["analysis"] == "static" and ev["engine"] == "pefile"
    assert ev["emulation"] == {"skipped": "emulation turned off (emulate: false)"}
    assert [b["id"] for b in ev["behaviours"]] == ["pe.imports_download"]
    assert ev["behaviours"][0]["evidence"] == ["urlmon.dll!URLDownloadToFileA"]
    assert (v.score, v.severity) == (15, "info")


@pytest.mark.parametrize(("data", "message"), [
    (b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0\x64\x86" + b"\0" * 10,
     r"pefile could not parse file \w{16} \(.*\): PEFormatError: 'File Header missing'"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600,
     r"olevba could not parse file \w{16} \(.*\): "),
])
async def test_a_file_its_parser_refuses_is_a_step_error(artifacts, tmp_path, data,
                                                         message) -> None:
    with pytest.raises(AnalyzerError, match=message):
        await analyze(record(artifacts, data, "broken"), tmp_path)


async def test_other_file_types_get_their_libmagic_type_only(artifacts, tmp_path) -> None:
    (v,) = await analyze(record(artifacts, b"just some text\n" * 10, "notes.txt"), tmp_path)
    assert (v.score, v.severity, v.signature) == (0, "info", "sandbox: file type not analysed")
    assert v.evidence["file_type"]["mime"] == "text/plain"
    assert v.evidence["analysis"] == "unsupported"


async def test_instruction_limit_stops_emulation_without_an_error(samples, artifacts,
                                                                  tmp_path) -> None:
    (v,) = await analyze(record(artifacts, samples["spin"], "spin.exe"), tmp_path,
                         max_instructions=200_000)
    main = v.evidence["emulation"]["entry_points"][-1]
    assert main["type"] == "module_entry" and main["returned"] is None
    assert main["stopped"] == "did not return within timeout=60 s or max_instructions=200000"
    assert "incomplete" in v.tags and v.score == 0


async def test_api_call_limit(samples, artifacts, tmp_path) -> None:
    (v,) = await analyze(record(artifacts, samples["dropper"], "d.exe"), tmp_path,
                         max_api_calls=3)
    main = v.evidence["emulation"]["entry_points"][-1]
    assert main["stopped"] == "max_api_calls=3 reached (last msvcrt.malloc)"
    assert "incomplete" in v.tags and v.evidence["network"]["urls"] == []


async def test_wall_timeout_kills_and_reaps_the_analysis_process(samples, artifacts,
                                                                 tmp_path) -> None:
    rec = record(artifacts, samples["spin"], "spin.exe")
    limits = Limits(timeout=600, wall_timeout=2, max_instructions=0, max_api_calls=100,
                    memory_mb=2048)
    with pytest.raises(WorkerError) as err:
        await run_worker(rec.path, limits, tmp_path / "w")
    pid = err.value.pid
    assert pid and str(err.value) == (f"analysis exceeded wall_timeout=2 s; the emulator "
                                      f"process (pid {pid}) was killed")
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped: not even a zombie
    # through the analyzer, the same limit is a step error naming the limit
    with pytest.raises(AnalyzerError, match="exceeded wall_timeout=2 s"):
        await analyze(rec, tmp_path, timeout=600, wall_timeout=2, max_instructions=0)


async def test_file_size_limit(samples, artifacts, tmp_path) -> None:
    rec = record(artifacts, samples["benign"], "b.exe")
    with pytest.raises(AnalyzerError, match=rf"\({rec.size} bytes\) is larger than "
                                            r"max_file_bytes=1000; not analysed"):
        await analyze(rec, tmp_path, max_file_bytes=1000)


def _http_pcap(path: Path, files: list[tuple[str, bytes]]) -> None:
    """One HTTP/1.1 download per file, each on its own TCP connection."""
    write_capture(path, [http_download(f"10.0.0.1:{40000 + i} > 10.0.0.2:80",
                                       f"/files/{name}", body)
                         for i, (name, body) in enumerate(files)])


async def test_in_a_workflow_one_file_errors_and_the_others_get_verdicts(samples,
                                                                         tmp_path) -> None:
    files = [("dropper.exe", samples["dropper"]), ("regcreate.exe", samples["regcreate_hkcu"]),
             ("benign.exe", samples["benign"]), ("invoice.docm", samples["macro.docm"])]
    pcap = tmp_path / "downloads.pcap"
    _http_pcap(pcap, files)
    host = build_host()
    wf = load_workflow("<test>", host, text=f"""
name: carve-and-detonate
steps:
  - id: carve
    uses: carve
    input: pcap
    with: {{protocols: [http], artifacts_dir: "{tmp_path / 'artifacts'}"}}
  - id: detonate
    uses: sandbox
    input: carve
    concurrency: 2
    timeout: 2m
    with: {{timeout: 30}}
""")
    verdicts: list[Verdict] = []
    summary = await Engine(host).run(wf, file_chunks(pcap), case="sbx",
                                     on_verdict=verdicts.append)
    assert summary.status == "partial"  # a step error, not a failed run
    step = next(s for s in summary.steps if s.step == "detonate")
    assert (step.status, step.records_in, step.outputs) == ("error", 4, {"verdict": 3})
    (error,) = step.errors
    crash_sha = ArtifactStore(tmp_path / "artifacts").put(samples["regcreate_hkcu"]).sha256
    assert error.kind == "error" and error.subject
    assert error.subject not in {v.subject_id for v in verdicts}  # the crashed file's id
    assert re.search(rf"speakeasy crashed in its advapi32\.RegCreateKey API handler .* "
                     rf"file {crash_sha[:16]}", error.message)
    got = {v.evidence["filename"]: (v.severity, v.score) for v in verdicts}
    assert got == {"dropper.exe": ("high", 85), "benign.exe": ("info", 0),
                   "invoice.docm": ("medium", 50)}
    assert all(v.case == "sbx" and v.step == "detonate" and v.flow.dport == 80
               for v in verdicts)


def test_readme_documents_every_heuristic_with_its_points() -> None:
    section = README.read_text().split("## Scoring", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| (\d+) \| (.+) \|$", section, re.M)
    assert {hid: int(points) for hid, points, _ in rows} == {
        h.id: h.points for h in scoring.HEURISTICS.values()}
    for hid, _points, text in rows:
        assert text == scoring.HEURISTICS[hid].description


@pytest.mark.parametrize("memory_mb", [64, 128])
async def test_memory_limit_is_a_step_error_naming_it(samples, artifacts, tmp_path,
                                                      memory_mb) -> None:
    # 64 MiB: the analysis process cannot even map its libraries; 128 MiB: speakeasy
    # cannot map the emulated image. Either way the file's error names the limit.
    rec = record(artifacts, samples["benign"], "b.exe")
    with pytest.raises(AnalyzerError, match=rf"memory_mb={memory_mb}"):
        await analyze(rec, tmp_path, memory_mb=memory_mb)


def _children() -> set[int]:
    """This process's analysis workers, and its zombies (whose command line is empty)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and (b"sandbox/worker.py" in cmdline
                                              or fields[0] == "Z"):
            out.add(int(stat.parent.name))
    return out


async def test_step_timeout_cancels_and_reaps_the_analysis_process(samples, tmp_path) -> None:
    pcap = tmp_path / "spin.pcap"
    _http_pcap(pcap, [("spin.exe", samples["spin"])])
    host = build_host()
    wf = load_workflow("<test>", host, text=f"""
name: cancel
steps:
  - id: carve
    uses: carve
    with: {{protocols: [http], artifacts_dir: "{tmp_path / 'artifacts'}"}}
  - id: detonate
    uses: sandbox
    input: carve
    timeout: 2s
    with: {{timeout: 600, max_instructions: 0}}
""")
    before = _children()
    summary = await Engine(host).run(wf, file_chunks(pcap))
    step = next(s for s in summary.steps if s.step == "detonate")
    assert (summary.status, step.status) == ("partial", "timeout")
    assert step.errors[0].message == "no result within the step timeout of 2 s"
    assert _children() <= before  # killed and reaped when the engine cancelled the call
