"""The ``sandbox`` analyzer on documents other than Office: PDF (pdfid's name counts in
the analysis worker, compressed object streams included, ``#xx``-escaped names, URIs, the
inflate limits) and RTF (embedded OLE objects through oletools' rtfobj). The documents are
harmless and built byte for byte by ``tests/samples/pdfdoc.py`` and ``rtfdoc.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pcapwire.extract.artifacts import ArtifactStore
from pcapwire.plugins.sandbox import worker
from samples.pdfdoc import active_pdf, benign_pdf, bomb_pdf
from samples.rtfdoc import dropper_rtf, plain_rtf
from test_sandbox_local import analyze, record


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


async def test_benign_pdf_is_analysed_and_scores_zero(artifacts, tmp_path: Path) -> None:
    (v,) = await analyze(record(artifacts, benign_pdf(), "report.pdf"), tmp_path)
    ev = v.evidence
    assert (v.score, v.severity, v.signature) == (0, "info", "sandbox: nothing suspicious found")
    assert ev["analysis"] == "pdf" and ev["file_type"]["mime"] == "application/pdf"
    assert ev["pdf"]["version"] == "1.7" and ev["pdf"]["keywords"] == {}
    assert v.signature_id == "sandbox.local.pdf"


async def test_active_pdf_shows_javascript_launch_hidden_names_and_uri(
        artifacts, tmp_path: Path) -> None:
    (v,) = await analyze(record(artifacts, active_pdf(), "invoice.pdf"), tmp_path)
    pdf = v.evidence["pdf"]
    assert pdf["keywords"] == {"/JS": 1, "/JavaScript": 1, "/OpenAction": 1, "/Launch": 1,
                               "/URI": 2, "/ObjStm": 1}  # /S /URI /URI (...): pdfid counts both
    assert pdf["hex_escaped_names"] == {"/JavaScript": 1}
    assert (pdf["streams_inflated"], pdf["limits"]) == (1, [])  # the /Launch was inside it
    assert pdf["uris"] == ["http://c2.example.invalid/collect"]
    behaviours = {b["id"]: b["evidence"] for b in v.evidence["behaviours"]}
    assert behaviours == {"pdf.javascript": ["/JS x1", "/JavaScript x1"],
                          "pdf.auto_action": ["/OpenAction x1"],
                          "pdf.launch": ["/Launch x1"],
                          "pdf.hidden_names": ["/JavaScript x1"],
                          "network.contact": ["http://c2.example.invalid/collect"]}
    # 30 + 20 + 40 + 15 + 15 = 120, capped
    assert (v.score, v.severity) == (100, "critical")
    assert "incomplete" not in v.tags


def test_per_stream_inflate_limit_is_named() -> None:
    """A stream that inflates beyond MAX_PDF_STREAM_INFLATE is cut there (a bomb)."""
    facts = worker.pdf_facts(bomb_pdf(streams=1, mib=20))
    assert facts["bytes_inflated"] == worker.MAX_PDF_STREAM_INFLATE
    assert (facts["streams_cut"], facts["limits"]) == (1, ["MAX_PDF_STREAM_INFLATE"])


def test_per_file_inflate_limit_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MAX_PDF_INFLATE", 3 * worker.MAX_PDF_STREAM_INFLATE // 2)
    facts = worker.pdf_facts(bomb_pdf(streams=3, mib=5))
    assert facts["bytes_inflated"] == worker.MAX_PDF_INFLATE
    assert facts["limits"] == ["MAX_PDF_INFLATE"] and facts["streams_inflated"] == 3


async def test_a_pdf_bomb_is_an_incomplete_verdict_not_an_error(artifacts,
                                                                tmp_path: Path) -> None:
    (v,) = await analyze(record(artifacts, bomb_pdf(streams=1, mib=20), "big.pdf"), tmp_path)
    assert v.evidence["pdf"]["limits"] == ["MAX_PDF_STREAM_INFLATE"]
    assert "incomplete" in v.tags and v.score == 0


async def test_plain_rtf_has_no_objects(artifacts, tmp_path: Path) -> None:
    (v,) = await analyze(record(artifacts, plain_rtf(), "letter.rtf"), tmp_path)
    assert v.evidence["analysis"] == "rtf" and v.evidence["engine"] == "rtfobj"
    assert v.evidence["rtf"] == {"objects": [], "object_count": 0}
    assert (v.score, v.signature) == (0, "sandbox: nothing suspicious found")


async def test_rtf_package_and_equation_editor_objects(artifacts, tmp_path: Path) -> None:
    (v,) = await analyze(record(artifacts, dropper_rtf(), "order.rtf"), tmp_path)
    pkg, eq = v.evidence["rtf"]["objects"]
    assert (pkg["class"], pkg["package"]) == ("Package", {
        "filename": "invoice.vbs", "source_path": "C:\\Users\\a\\invoice.vbs", "size": 18})
    assert (eq["class"], eq["exploit"]) == (
        "Equation.3", "Equation Editor (CVE-2017-11882, CVE-2018-0802)")
    behaviours = {b["id"]: b["evidence"] for b in v.evidence["behaviours"]}
    assert behaviours == {
        "rtf.object": ["Package", "Equation.3"], "rtf.package": ["invoice.vbs"],
        "rtf.exploit": ["Equation.3: Equation Editor (CVE-2017-11882, CVE-2018-0802)"]}
    assert (v.score, v.severity) == (95, "critical")  # 15 + 30 + 50
