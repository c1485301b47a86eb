"""The operator publishes the authority-signed directory; the server stores, checks and serves it."""

from __future__ import annotations

import json

import pytest

from federation.authority import AuthorityError, SignedDirectory, fingerprint, sign_directory
from secagg.keys import IdentityKey
from tests.service.test_app import OPERATOR, Party, enrol, service  # noqa: F401 - the fixture

AUTH = {"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"}


def publish(http, signed: SignedDirectory, headers=AUTH):
    return http.post("/v1/operator/directory", content=signed.to_bytes(), headers=headers)


def test_only_the_operator_publishes_and_clients_get_the_signed_directory(service, state):  # noqa: F811
    http, manager, secrets = service
    parties = [Party(c, manager.run_id) for c in range(3)]
    authority = IdentityKey.generate()
    signed = sign_directory(authority, manager.run_id, 1, {p.client_id: p.identity.public_bytes for p in parties})
    assert publish(http, signed, headers={"Content-Type": "application/json"}).status_code == 401
    response = publish(http, signed)
    assert response.status_code == 200 and response.json()["status"] == "published"
    assert response.json()["authority_fingerprint"] == fingerprint(authority.public_bytes)
    assert publish(http, signed).json()["status"] == "unchanged"
    assert enrol(http, manager, secrets, parties[0]).status_code == 201
    served = parties[0].call(http, "GET", "/v1/directory").json()["signed_directory"]
    assert SignedDirectory.from_json(served) == signed
    assert state.signed_directory() == signed  # kept in the state directory across restarts


def test_enrolment_is_limited_to_the_keys_the_authority_signed(service):  # noqa: F811
    http, manager, secrets = service
    listed, unlisted = Party(0, manager.run_id), Party(1, manager.run_id)
    authority = IdentityKey.generate()
    assert publish(http, sign_directory(authority, manager.run_id, 1, {0: listed.identity.public_bytes})).status_code \
        == 200
    response = enrol(http, manager, secrets, unlisted)
    assert response.status_code == 403 and "not in run" in response.json()["detail"]
    impostor = Party(0, manager.run_id)  # the server (or anyone with the token) enrolling another key for id 0
    response = enrol(http, manager, secrets, impostor)
    assert response.status_code == 403 and "is not the key the authority signed" in response.json()["detail"]
    assert manager.repository.list_clients(manager.run_id) == []


@pytest.mark.parametrize("case, status, detail", [
    ("forged", 400, "does not verify"),
    ("other run", 400, "this server serves run"),
    ("other authority", 409, "refusing one by"),
    ("older", 409, "is not newer"),
    ("enrolled key differs", 409, "is enrolled with key"),
])
def test_a_bad_publication_is_refused_and_changes_nothing(service, state, case, status, detail):  # noqa: F811
    http, manager, secrets = service
    party = Party(0, manager.run_id)
    assert enrol(http, manager, secrets, party).status_code == 201
    authority = IdentityKey.generate()
    keys = {0: party.identity.public_bytes, 1: IdentityKey.generate().public_bytes}
    first = sign_directory(authority, manager.run_id, 2, keys)
    assert publish(http, first).status_code == 200
    bad = {
        "forged": SignedDirectory(sign_directory(authority, manager.run_id, 3, {**keys, 2: keys[1]}).directory,
                                  authority.public_bytes, first.signature),
        "other run": sign_directory(authority, manager.run_id + 1, 3, keys),
        "other authority": sign_directory(IdentityKey.generate(), manager.run_id, 3, keys),
        "older": sign_directory(authority, manager.run_id, 1, keys),
        "enrolled key differs": sign_directory(authority, manager.run_id, 3,
                                               {**keys, 0: IdentityKey.generate().public_bytes}),
    }[case]
    response = publish(http, bad)
    assert response.status_code == status and detail in response.json()["detail"]
    assert state.signed_directory() == first
    garbage = http.post("/v1/operator/directory", content=json.dumps({"format": "x"}), headers=AUTH)
    assert garbage.status_code == 400 and "malformed signed directory" in garbage.json()["detail"]


def test_a_networked_client_will_not_start_without_an_authority_to_pin(service, tmp_path):  # noqa: F811
    from federation.errors import FederationError
    from federation.http_client import ClientOptions, ParticipantProcess

    http, manager, secrets = service
    base = dict(server_url="http://testserver", client_id=0, key_directory=tmp_path / "keys", insecure=True)
    with pytest.raises(FederationError, match="no enrolment authority pinned for this run"):
        ParticipantProcess(ClientOptions(**base), http=http, echo=None).start()
    authority = fingerprint(IdentityKey.generate().public_bytes)
    ParticipantProcess(ClientOptions(**base, authority_fingerprint=authority), http=http, echo=None).start()
    # Restarted without the flag, it still has its pin for the run.
    ParticipantProcess(ClientOptions(**base), http=http, echo=None).start()
    with pytest.raises(AuthorityError, match="32 hex digits"):
        ClientOptions(**base, authority_fingerprint="not-a-fingerprint")
