"""The ``sandbox`` job kind on real carved files: harmless C programs from ``tests/samples/``
compiled with ``x86_64-w64-mingw32-gcc`` (as tests/test_sandbox_local.py builds them), sent
in an HTTP capture, carved by an ``extract`` job, then emulated by speakeasy (never run on
the host) through the runner in-process and through ``pcapwire worker --job -``; and the
paths a job may not name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pcapwire.extract.layout import ARTIFACTS, CarveDir
from pcapwire.jobs import Job, JobResult
from pcapwire.jobs.handlers_sandbox import PROFILES
from pcapwire.jobs.runner import run_job
from pcapwire.testing import http_download, write_capture

SAMPLES = Path(__file__).parent / "samples"
CC = "x86_64-w64-mingw32-gcc"
BROKEN_PE = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0\x64\x86" + b"\0" * 10
DROPPER_SIGNATURE = ("sandbox: network.download, network.contact, persistence.autorun_key, "
                     "file.write")


@pytest.fixture(scope="module")
def carved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tenant's store with ``dropper.exe``, ``benign.exe`` and ``broken.exe`` (a PE
    header pefile refuses) carved from an HTTP capture
    into ``results/q1.carve``: file name -> the carved file."""
    if shutil.which(CC) is None:
        pytest.fail(f"{CC} not found: install the Debian package gcc-mingw-w64-x86-64")
    tmp = tmp_path_factory.mktemp("sandbox-job")
    root = tmp / "tenants" / "acme"
    (root / "results").mkdir(parents=True)
    downloads = []
    for i, name in enumerate(("dropper", "benign")):
        exe = tmp / f"{name}.exe"
        subprocess.run([CC, "-O1", "-s", "-o", str(exe), str(SAMPLES / f"{name}.c"),
                        "-lurlmon", "-ladvapi32"], check=True, capture_output=True)
        downloads.append(http_download(f"10.0.0.1:{40000 + i} > 10.0.0.2:80",
                                       f"/files/{name}.exe", exe.read_bytes()))
    downloads.append(http_download("10.0.0.1:40009 > 10.0.0.2:80", "/files/broken.exe",
                                   BROKEN_PE))
    write_capture(root / "results" / "q1.pcap", downloads)
    carve = run_job(Job("extract", "x1", "acme", {"pcap": "results/q1.pcap",
                                                  "out": "results/q1.carve"}), root)
    assert carve.ok and carve.data["summary"]["files"] == 3, carve
    files = CarveDir(root / "results" / "q1.carve").files()
    return {f["filename"]: root / "results" / "q1.carve" / ARTIFACTS / f["sha256"][:2] /
            f["sha256"] for f in files}


def sandbox(root: Path, **params: object) -> JobResult:
    return run_job(Job("sandbox", "s1", "acme", dict(params)), root)


def tenant(carved: dict[str, Path]) -> Path:
    return next(iter(carved.values())).parents[4]


def test_a_carved_dropper_is_emulated_and_scored(carved: dict[str, Path]) -> None:
    root = tenant(carved)
    exe = carved["dropper.exe"]
    result = sandbox(root, file=str(exe.relative_to(root)))
    assert result.ok, result
    data = result.data
    assert (data["sha256"], data["filename"], data["profile"]) == (exe.name, "dropper.exe",
                                                                   "emulate")
    assert (data["score"], data["severity"]) == (85, "high")
    (v,) = data["verdicts"]
    assert (v["analyzer"], v["signature"], v["signature_id"], v["score"]) == (
        "sandbox", DROPPER_SIGNATURE, "sandbox.local.emulation", 85)
    assert v["evidence"]["network"]["urls"] == ["http://update.example.invalid/payload.bin"]
    assert (v["flow"]["src_ip"], v["flow"]["dest_port"]) == ("10.0.0.1", 80)  # files.jsonl


def test_static_profile_through_the_worker_command(carved: dict[str, Path]) -> None:
    root = tenant(carved)
    job = Job("sandbox", "s2", "acme", {"file": str(carved["dropper.exe"]),
                                        "profile": "static"})
    proc = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(root),
                           "worker", "--job", "-"], input=job.to_json(), capture_output=True,
                          check=False, timeout=60)
    [line] = proc.stdout.splitlines()
    result = JobResult.from_json(line)
    assert (proc.returncode, result.ok) == (0, True), result
    (v,) = result.data["verdicts"]
    assert (v["evidence"]["analysis"], v["score"], v["severity"]) == ("static", 15, "info")
    assert [b["id"] for b in v["evidence"]["behaviours"]] == ["pe.imports_download"]
    assert PROFILES["static"] == {"emulate": False}


def test_paths_outside_the_tenant_are_refused(carved: dict[str, Path], tmp_path: Path
                                              ) -> None:
    root = tenant(carved)
    outside = tmp_path / "outside.exe"
    outside.write_bytes(carved["benign.exe"].read_bytes())
    link = root / "results" / "link.exe"
    link.symlink_to(outside)
    try:
        for path in ("../../../outside.exe", str(outside), "results/link.exe",
                     "results/q1.carve/../../../x"):
            result = sandbox(root, file=path)
            assert (result.ok, result.code, result.data) == (
                False, "path_not_allowed", {"parameter": "file"}), path
    finally:
        link.unlink()


def test_only_carved_files_and_known_profiles(carved: dict[str, Path]) -> None:
    root = tenant(carved)
    assert (sandbox(root, file="results/q1.pcap").code, sandbox(root, file="results").code
            ) == ("not_carved", "not_carved")
    copy = root / "results" / "q1.carve" / "copy.exe"  # inside the carve dir, not carved
    copy.write_bytes(carved["benign.exe"].read_bytes())
    try:
        assert sandbox(root, file=str(copy)).code == "not_carved"
    finally:
        os.unlink(copy)
    assert sandbox(root, file="results/nope.exe").code == "not_found"
    bad = sandbox(root, file=str(carved["benign.exe"]), profile="cape")
    assert (bad.code, bad.message) == (
        "invalid_params", "parameter 'profile': no profile 'cape'; choose from emulate, static")


def test_a_file_the_analysis_refuses_is_a_sandbox_error(carved: dict[str, Path]) -> None:
    root = tenant(carved)
    result = sandbox(root, file=str(carved["broken.exe"]))
    assert (result.ok, result.code, result.data) == (False, "sandbox_error", {"verdicts": []})
    sha = carved["broken.exe"].name
    assert result.message.startswith(f"pefile could not parse file {sha[:16]}")
    assert result.message.endswith("PEFormatError: 'File Header missing'")
