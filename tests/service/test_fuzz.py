"""Fuzzing the HTTP API against its own OpenAPI schema (schemathesis): never a 5xx.

Two passes over every operation, with a round open (so stage endpoints reach the protocol code):
as generated (mostly unauthenticated: the auth layer must refuse cleanly), and with every
generated request validly signed by an enrolled client and carrying the operator token (so the
fuzzed bodies, paths and queries reach validation, the round manager and storage).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from federation.config import RunConfig
from federation.service.app import create_app
from federation.service.auth import ReplayGuard, sign_request
from federation.service.rounds import RoundManager, ServiceSettings
from federation.service.state import StateDirectory
from storage.repositories import Repository
from tests.service.conftest import SMALL_RUN
from tests.service.fleet import ScriptedClient

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a test extra (pip install schemathesis)")

OPERATOR = "operator-token-for-fuzzing-0123456789"
FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def service():
    previous = os.environ.get("FEDVAULT_OPERATOR_TOKEN")
    os.environ["FEDVAULT_OPERATOR_TOKEN"] = OPERATOR
    with tempfile.TemporaryDirectory() as folder, Repository.open(str(Path(folder) / "db")) as repository:
        config = RunConfig(**{**SMALL_RUN, "history": True})
        run_id = repository.create_run(config.to_dict()).id
        state = StateDirectory(Path(folder) / "state")
        manager = RoundManager(repository, run_id, state, ServiceSettings(min_clients=6, train_timeout=600))
        fleet = [ScriptedClient(c, run_id) for c in range(6)]
        for client in fleet:
            client.enrol(manager)
            manager.task(client.client_id)
        manager.tick()  # round 0 is open at advertise_keys for the whole test
        app = create_app(manager, server_secrets=state.secrets(), replay_guard=ReplayGuard(), drive=False)
        with TestClient(app, raise_server_exceptions=False) as http:
            yield app, http, fleet[0]
    if previous is None:
        os.environ.pop("FEDVAULT_OPERATOR_TOKEN", None)
    else:
        os.environ["FEDVAULT_OPERATOR_TOKEN"] = previous


@pytest.fixture(scope="module")
def operations(service):
    app, _, _ = service
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 20  # every endpoint is in the schema
    return found


def _fuzz(operations, send) -> None:
    """Run each operation's generated cases through ``send``; collect every 5xx."""
    failures = []
    for operation in operations:
        @FUZZ
        @given(case=operation.as_strategy())
        def check(case):
            response = send(case)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        check()
    assert failures == []


def test_generated_requests_never_get_a_server_error(service, operations):
    _, http, _ = service
    _fuzz(operations, lambda case: _send(http, case, sign_as=None))


def test_validly_signed_generated_requests_never_get_a_server_error(service, operations):
    _, http, client = service
    _fuzz(operations, lambda case: _send(http, case, sign_as=client))


def _send(http: TestClient, case, *, sign_as):
    """Send the generated request as bytes we control (so its signature covers exactly them)."""
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    body = b""
    if case.body is not None and type(case.body).__name__ != "NotSet":
        raw = getattr(case.body, "data", case.body)  # schemathesis wraps generated binary in ``Binary``
        if case.media_type == "application/json":
            body = json.dumps(raw).encode()
        elif isinstance(raw, (bytes, bytearray)):
            body = bytes(raw)
        else:
            body = str(raw).encode()
        headers["Content-Type"] = case.media_type or "application/octet-stream"
    if sign_as is not None:
        # Point the signed pass at the open round and at the signer's own resources, so generated
        # bodies and queries reach the protocol, the round manager and storage (the unsigned pass
        # keeps the generated ids).
        case.path_parameters = {**(case.path_parameters or {}),
                                **{name: value for name, value in (("round_index", 0), ("client_id", sign_as.client_id))
                                   if name in (case.path_parameters or {})}}
    target = case.formatted_path
    if case.query:
        target += "?" + urlencode(case.query, doseq=True)
    if sign_as is not None:
        headers.update(sign_request(sign_as.identity, run_id=1, client_id=sign_as.client_id, method=case.method,
                                    target=target, body=body))
        headers["Authorization"] = f"Bearer {OPERATOR}"
    return http.request(case.method, target, content=body, headers=headers)
