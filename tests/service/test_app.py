"""The HTTP API in process (ASGI test client): who may do what, and every refusal is a clear 4xx
that changes nothing."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from federation.keystore import run_state_tag
from federation.run_secrets import RunSecretDestroyedError
from federation.service.app import create_app
from federation.service.auth import (
    HEADER_SIGNATURE,
    ReplayGuard,
    enrolment_token,
    sign_request,
)
from federation.service.rounds import RoundManager, ServiceSettings
from secagg.client import SecAggClient
from secagg.keys import IdentityKey
from secagg.modular import wrap
from secagg.stages import STAGES
from unlearning.secrets import generate_history_secret, history_commitment

OPERATOR = "operator-token-for-tests-0123456789"


class Party:
    """A client identity that signs its own requests."""

    def __init__(self, client_id: int, run_id: int) -> None:
        self.client_id = client_id
        self.run_id = run_id
        self.identity = IdentityKey.generate()
        self.commitment = history_commitment(run_id, client_id, generate_history_secret())

    def headers(self, method: str, target: str, body: bytes = b"", *, as_client: int | None = None,
                identity: IdentityKey | None = None) -> dict[str, str]:
        return sign_request(identity or self.identity, run_id=self.run_id,
                            client_id=self.client_id if as_client is None else as_client,
                            method=method, target=target, body=body)

    def call(self, http, method: str, target: str, body: bytes = b"", **kwargs):
        headers = self.headers(method, target, body, **kwargs)
        headers["Content-Type"] = "application/json" if body[:1] == b"{" else "application/octet-stream"
        return http.request(method, target, content=body, headers=headers)


@pytest.fixture
def service(repository, state, small_config, monkeypatch):
    monkeypatch.setenv("FEDVAULT_OPERATOR_TOKEN", OPERATOR)
    run_id = repository.create_run(small_config.to_dict()).id
    manager = RoundManager(repository, run_id, state, ServiceSettings(min_clients=6))
    app = create_app(manager, server_secrets=state.secrets(), replay_guard=ReplayGuard(), drive=False)
    with TestClient(app) as http:
        yield http, manager, state.secrets()


def enrol(http, manager, secrets, party: Party, *, token: str | None = None, identity=None):
    body = json.dumps({"client_id": party.client_id,
                       "enrolment_token": token or enrolment_token(secrets.enrolment_key, manager.run_id,
                                                                   party.client_id),
                       "identity_public_key": (identity or party.identity).public_bytes.hex(),
                       "history_commitment": party.commitment.hex()}).encode()
    return party.call(http, "POST", "/v1/enrol", body)


def snapshot(manager: RoundManager, state) -> tuple:
    """Everything a refused request must leave untouched."""
    repository, run_id = manager.repository, manager.run_id
    journal = state.journal_path.read_bytes() if state.journal_path.exists() else None
    return (repository.audit_entries(run_id), repository.list_rounds(run_id), repository.ledger_entries(run_id),
            repository.list_clients(run_id), repository.list_deletion_requests(run_id), journal, manager.version)


@pytest.fixture
def enrolled(service):
    http, manager, secrets = service
    parties = [Party(c, manager.run_id) for c in range(6)]
    for party in parties:
        assert enrol(http, manager, secrets, party).status_code == 201
    return http, manager, parties


def test_the_openapi_schema_is_served_with_every_endpoint(service):
    http, _, _ = service
    schema = http.get("/openapi.json").json()
    paths = schema["paths"]
    for segment in ("advertise-keys", "share-keys", "masked-input", "unmask", "history-record"):
        assert "requestBody" in paths[f"/v1/rounds/{{round_index}}/{segment}"]["post"]
    for path in ("/v1/enrol", "/v1/clients/{client_id}/task", "/v1/rounds/{round_index}",
                 "/v1/clients/{client_id}/deletion-request", "/v1/operator/audit", "/v1/operator/rounds"):
        assert path in paths


def test_enrolment_binds_a_key_once_and_refuses_wrong_tokens_and_other_keys(service, state):
    http, manager, secrets = service
    alice = Party(0, manager.run_id)
    assert enrol(http, manager, secrets, alice).json()["status"] == "enrolled"
    assert enrol(http, manager, secrets, alice).json()["status"] == "already-enrolled"  # idempotent: 200
    before = snapshot(manager, state)
    mallory = Party(0, manager.run_id)  # someone else, claiming id 0 with a valid token
    response = enrol(http, manager, secrets, mallory)
    assert response.status_code == 409 and "already enrolled with a different identity key" in response.json()["detail"]
    bob = Party(1, manager.run_id)
    response = enrol(http, manager, secrets, bob, token=enrolment_token(secrets.enrolment_key, manager.run_id, 2))
    assert response.status_code == 403 and "not valid for client 1" in response.json()["detail"]
    response = enrol(http, manager, secrets, bob, identity=IdentityKey.generate())  # no proof of possession
    assert response.status_code == 401 and "signature does not verify" in response.json()["detail"]
    assert snapshot(manager, state) == before


def test_a_signed_client_gets_its_task(enrolled):
    http, manager, parties = enrolled
    response = parties[0].call(http, "GET", "/v1/clients/0/task")
    assert response.status_code == 200
    assert response.json()["run_status"] == "running" and response.json()["request"] is None


def test_a_forged_signature_is_refused_and_changes_nothing(enrolled, state):
    http, manager, parties = enrolled
    before = snapshot(manager, state)
    headers = parties[0].headers("GET", "/v1/clients/0/task")
    headers[HEADER_SIGNATURE] = IdentityKey.generate().sign(b"something else").hex()
    response = http.get("/v1/clients/0/task", headers=headers)
    assert response.status_code == 401 and "signature does not verify" in response.json()["detail"]
    response = http.get("/v1/clients/0/task")  # unsigned
    assert response.status_code == 401 and "missing X-Fedvault-Client" in response.json()["detail"]
    assert snapshot(manager, state) == before


def test_a_replayed_request_is_refused_and_changes_nothing(service, state):
    http, manager, secrets = service
    alice = Party(0, manager.run_id)
    body = json.dumps({"client_id": 0, "enrolment_token": enrolment_token(secrets.enrolment_key, manager.run_id, 0),
                       "identity_public_key": alice.identity.public_bytes.hex(),
                       "history_commitment": alice.commitment.hex()}).encode()
    headers = {**alice.headers("POST", "/v1/enrol", body), "Content-Type": "application/json"}
    assert http.post("/v1/enrol", content=body, headers=headers).status_code == 201
    before = snapshot(manager, state)
    replay = http.post("/v1/enrol", content=body, headers=headers)
    assert replay.status_code == 401 and "replayed request refused" in replay.json()["detail"]
    assert snapshot(manager, state) == before


def test_a_client_cannot_act_as_or_read_another(enrolled, state):
    http, manager, parties = enrolled
    before = snapshot(manager, state)
    response = parties[0].call(http, "GET", "/v1/clients/1/task")
    assert response.status_code == 403 and "client 0 may not act as or read client 1" in response.json()["detail"]
    response = parties[0].call(http, "GET", "/v1/clients/1/ledger")
    assert response.status_code == 403
    response = parties[0].call(http, "GET", "/v1/clients/1/task", as_client=1)  # claims id 1, signs with its own key
    assert response.status_code == 401 and "signature does not verify for client 1" in response.json()["detail"]
    assert snapshot(manager, state) == before


def test_oversized_bodies_are_refused_before_they_are_read(enrolled, state):
    http, manager, parties = enrolled
    before = snapshot(manager, state)
    limit = manager.max_message_bytes()
    big = os.urandom(limit + 1)
    response = parties[0].call(http, "POST", "/v1/rounds/0/masked-input", big)
    assert response.status_code == 413 and f"limit of {limit} bytes" in response.json()["detail"]
    response = parties[0].call(http, "POST", "/v1/rounds/0/report", b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(8):
            yield b"x" * 10_000

    response = http.post("/v1/rounds/0/report", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert snapshot(manager, state) == before


@pytest.mark.parametrize("method, target, body, status, detail", [
    ("POST", "/v1/rounds/0/masked-input", b"", 400, "empty body"),
    ("POST", "/v1/rounds/0/masked-input", b"\x00" * 64, 409, "round 0 is not open"),
    ("POST", "/v1/rounds/0/report", b"{not json", 422, None),
    ("POST", "/v1/rounds/0/report", b'{"num_samples": -1}', 422, None),
    ("POST", "/v1/rounds/0/report", b'{"num_samples": 1, "extra": 2}', 422, None),
    ("GET", "/v1/rounds/5", b"", 404, "round 5 of run"),
    ("GET", "/v1/rounds/0/model", b"", 409, "no round is open"),
    ("POST", "/v1/clients/0/deletion-request", b"garbage", 400, "not a signed deletion request"),
])
def test_bad_input_gets_a_4xx_that_says_what_is_wrong(enrolled, state, method, target, body, status, detail):
    http, manager, parties = enrolled
    before = snapshot(manager, state)
    response = parties[0].call(http, method, target, body)
    assert response.status_code == status, response.text
    if detail is not None:
        assert detail in response.json()["detail"]
    assert snapshot(manager, state) == before


def test_operator_endpoints_need_the_operator_token(enrolled):
    http, manager, parties = enrolled
    for target in ("/v1/operator/audit", "/v1/operator/rounds", "/v1/operator/clients", "/v1/operator/verify"):
        assert http.get(target).status_code == 401
        assert http.get(target, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert parties[0].call(http, "GET", target).status_code == 401  # a client is not the operator
        assert http.get(target, headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 200
    audit = http.get("/v1/operator/audit", headers={"Authorization": f"Bearer {OPERATOR}"}).json()
    assert [e["event"] for e in audit].count("client.enrolled") == 6
    verify = http.get("/v1/operator/verify", headers={"Authorization": f"Bearer {OPERATOR}"}).json()
    assert verify["audit_ok"] and verify["ledger_ok"]


def test_the_operator_issues_enrolment_tokens_for_the_runs_client_ids(service):
    http, manager, secrets = service
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    tokens = http.post("/v1/operator/enrolment-tokens", json={"client_ids": [0, 5]}, headers=auth).json()["tokens"]
    assert tokens == {str(c): enrolment_token(secrets.enrolment_key, manager.run_id, c) for c in (0, 5)}
    response = http.post("/v1/operator/enrolment-tokens", json={"client_ids": [6]}, headers=auth)
    assert response.status_code == 400 and "clients 0..5" in response.json()["detail"]


def test_a_round_runs_over_the_api(enrolled):
    """Drive one round through the HTTP endpoints only (the manager ticks by hand here)."""
    http, manager, parties = enrolled
    for party in parties:
        party.call(http, "GET", f"/v1/clients/{party.client_id}/task")  # online
    manager.tick()
    clients = {}
    for stage in STAGES:
        for party in parties:
            task = party.call(http, "GET", f"/v1/clients/{party.client_id}/task").json()
            assert task["stage"] == stage and task["request"] is not None
            request = base64.b64decode(task["request"])
            round_index = task["round_index"]
            if stage == STAGES[0]:
                directory = party.call(http, "GET", "/v1/directory").json()["identity_keys"]
                clients[party.client_id] = SecAggClient(party.client_id, party.identity,
                                                        {int(c): bytes.fromhex(k) for c, k in directory.items()})
                body = json.dumps({"num_samples": 3, "train_loss": 0.25}).encode()
                assert party.call(http, "POST", f"/v1/rounds/{round_index}/report", body).status_code == 200
            reply = clients[party.client_id].handle(request)
            if stage == STAGES[0]:
                config = clients[party.client_id].config
                clients[party.client_id].set_input(wrap(np.zeros(config.vector_length, np.int64), config.bits))
            segment = stage.replace("_", "-")
            response = party.call(http, "POST", f"/v1/rounds/{round_index}/{segment}", reply)
            assert response.status_code == 200, response.text
            assert party.call(http, "POST", f"/v1/rounds/{round_index}/{segment}", reply).json()["duplicate"]
        manager.tick()
    status = parties[0].call(http, "GET", "/v1/rounds/0").json()
    assert status["state"] == "completed" and status["survivors"] == 6


def test_a_client_is_unlearned_over_http_with_its_signed_deletion_request(repository, state, clock, tmp_path,
                                                                         small_config, monkeypatch):
    """The whole deletion path: `request_deletion` (the CLI's function) → signed HTTP → the driver
    unlearns between rounds → the client is deleted and refused from then on."""
    from federation.client_runtime import ClientRuntime
    from federation.http_client import ClientOptions, request_deletion
    from tests.service.fleet import RuntimeClient, drive
    from unlearning.requests import sign_deletion_request

    monkeypatch.setenv("FEDVAULT_OPERATOR_TOKEN", OPERATOR)
    config = small_config.replace(history=True, checkpoint_every=1, rounds=2)
    run_id = repository.create_run(config.to_dict()).id
    manager = RoundManager(repository, run_id, state, ServiceSettings(min_clients=6, online_window=1e5), clock=clock)
    tag = run_state_tag(run_id, repository.get_run(run_id).created_at)  # as the networked client names it
    fleet = [RuntimeClient(ClientRuntime(c, config, run_id, tmp_path / "keys", run_tag=tag)) for c in range(6)]
    for client in fleet:
        client.enrol(manager)
    drive(manager, fleet, clock)
    app = create_app(manager, server_secrets=state.secrets(), replay_guard=ReplayGuard(), tick_interval=0.01)
    with TestClient(app) as http:
        options = ClientOptions(server_url="http://testserver", client_id=4, key_directory=tmp_path / "keys",
                                insecure=True)
        # Signed by client 4 but naming client 5: refused before anything is opened.
        keys = fleet[4].runtime.keys
        forged = sign_deletion_request(keys.identity, fleet[4].runtime.history_secret, run_id, 5).to_bytes()
        party = Party(4, run_id)
        party.identity = keys.identity
        response = party.call(http, "POST", "/v1/clients/4/deletion-request", forged)
        assert response.status_code == 403 and "names client 5" in response.json()["detail"]
        assert repository.list_deletion_requests(run_id) == []

        result = request_deletion(options, timeout=60, http=http)
        # The server confirmed the shredding: the client destroyed this run's history secret.
        assert result["history_secret_destroyed"] is True
        with pytest.raises(RunSecretDestroyedError, match="destroyed"):
            request_deletion(options, timeout=60, http=http)
    assert result["state"] == "shredded" and result["records_shredded"] == 2
    assert repository.get_client(run_id, 4).status == "deleted"
    assert manager.public_key_of(4) is None
