"""Property-based conformance of the served API with its OpenAPI document (schemathesis):
for generated requests to every operation, no 5xx, and every response's status, content
type, headers and body match the document; requests that violate the document are
refused with a 4xx. Runs against a real server on a loopback port with data in it, with a
bounded number of examples per operation. The examples are derandomized (the same on every
run, so CI is reproducible); raise EXAMPLES_PER_OPERATION locally to explore further (60
per operation, twice at random, found nothing more)."""

from __future__ import annotations

import urllib.request
from urllib.parse import urlencode

import pytest
import schemathesis
from apiutil import PCAP_TYPE, ServerThread, Tokens
from conftest import corpus_file
from hypothesis import HealthCheck, assume, given, settings
from pcapwire.api import ApiConfig
from pcapwire.api.limits import MAX_REQUEST_LINE_BYTES
from pcapwire.api.openapi import document
from schemathesis import GenerationMode

EXAMPLES_PER_OPERATION = 15
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance,
          schemathesis.checks.response_schema_conformance,
          schemathesis.checks.response_headers_conformance,
          schemathesis.checks.negative_data_rejection]
SCHEMA = schemathesis.openapi.from_dict(document())
# The validator's job is to answer 200 with the problems of an invalid document, so a
# document that violates the workflow schema is not a request to reject.
REPORTS_INVALID_INPUT = {"POST /api/v1/workflows/validate"}
OPERATIONS = {f"{op.method.upper()} {op.path}": op
              for op in (r.ok() for r in SCHEMA.get_all_operations())}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("schemathesis")
    tokens = Tokens(data)
    with ServerThread(ApiConfig(data_dir=data)) as srv:
        req = urllib.request.Request(
            f"{srv.url}/api/v1/ingest", data=corpus_file("zeek-http-get").read_bytes(),
            headers={"Content-Type": PCAP_TYPE, **tokens.headers("acme", "analyst")})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
        yield srv, tokens.headers("acme", "admin")


def _has_input(op) -> bool:
    return bool(op.definition.raw.get("parameters") or op.definition.raw.get("requestBody"))


CASES = [(label, mode) for label, op in sorted(OPERATIONS.items())
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or _has_input(op)]


@pytest.mark.parametrize(("label", "mode"), CASES,
                         ids=[f"{label}-{mode.value}" for label, mode in CASES])
def test_operation_conforms_to_the_document(server, label, mode):
    srv, auth = server

    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    def check(case):
        # A request line over the HTTP layer's limit never reaches the application (aiohttp
        # answers it with a plain-text 400; test_api_limits covers that limit).
        assume(len(case.formatted_path) + len(urlencode(case.query or {}, doseq=True))
               < MAX_REQUEST_LINE_BYTES - 100)
        checks = [c for c in CHECKS if label not in REPORTS_INVALID_INPUT
                  or c is not schemathesis.checks.negative_data_rejection]
        case.call_and_validate(base_url=srv.url, headers=auth, checks=checks, timeout=30)

    check()
