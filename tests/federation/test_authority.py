"""The enrolment authority: a deviating server cannot add, replace or impersonate a client.

The attack (issue 13, "key substitution"): the server hands the victim a directory in which every
neighbour's identity key is one the server made, runs those neighbours itself, and so learns the
victim's input from the "sum". Shown first against a client that takes the server's word (the
behaviour before the authority), then refused at every turn by a client that pinned the authority.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from federation.authority import (
    AuthorityError,
    DirectoryPins,
    DirectoryRefusedError,
    SignedDirectory,
    create_authority_key,
    fingerprint,
    load_authority_key,
    normalise_fingerprint,
    pins_path,
    sign_directory,
)
from federation.keystore import KeyFileError
from secagg.client import SecAggClient
from secagg.errors import ProtocolError
from secagg.keys import IdentityKey
from secagg.server import SecAggServer
from secagg.simulate import LocalRound, make_config

RUN = 41
N, K, T, BITS, LENGTH = 10, 9, 6, 16, 32
VICTIM = 0


class World:
    """Honest clients 0..N-1 with their own keys, and the operator's authority over them."""

    def __init__(self) -> None:
        self.identities = {c: IdentityKey.generate() for c in range(N)}
        self.keys = {c: key.public_bytes for c, key in self.identities.items()}
        self.authority = IdentityKey.generate()
        self.genuine = sign_directory(self.authority, RUN, 1, self.keys)

    def pins(self, tmp_path, client_id=VICTIM, *, pin=True) -> DirectoryPins:
        pins = DirectoryPins(tmp_path / f"client-{client_id}.pins", client_id, self.keys[client_id], RUN)
        if pin:
            pins.pin_authority(fingerprint_text=fingerprint(self.authority.public_bytes))
        return pins


@pytest.fixture
def world():
    return World()


def server_directory(local) -> dict[int, bytes]:
    """What the deviating server serves: its puppets' keys for every neighbour."""
    return dict(local.identity_keys)


def sybil_round(world, config):
    """The deviating server's round: every neighbour is a puppet with a key the server made; the
    victim is the real client (its own key) using the server's key list. Returns (the victim's
    input, what the server recovers as the victim's input, the round)."""
    rng = np.random.default_rng(5)  # test data, not secrets
    vectors = {c: rng.integers(0, 2**BITS, LENGTH, dtype=np.uint32) for c in range(N)}
    local = LocalRound(config, vectors)  # puppets 1..N-1 with identities the server generated
    local.identities[VICTIM] = world.identities[VICTIM]
    local.identity_keys[VICTIM] = world.keys[VICTIM]
    local.clients = {c: SecAggClient(c, local.identities[c], server_directory(local)) for c in range(N)}
    local.server = SecAggServer(config, local.identity_keys)
    for _ in range(4):
        local.step()
    total = local.server.result.sum.astype(np.int64)
    puppets = sum(vectors[c].astype(np.int64) for c in range(1, N))
    return vectors[VICTIM], ((total - puppets) % 2**BITS).astype(np.uint32), local


def test_key_substitution_reads_the_victims_input_when_the_client_takes_the_servers_word(world):
    # The behaviour before the authority: neighbours' keys are whatever GET /v1/directory says.
    config = make_config(range(N), BITS, LENGTH, neighbours_k=K, threshold=T)
    victim_input, recovered, local = sybil_round(world, config)
    assert np.array_equal(recovered, victim_input)  # the attack works: the "sum" gives the victim away
    # Every one of the victim's share messages went to (and was opened by) a puppet of the server.
    assert set(local.server.result.survivors) == set(range(N))


def test_a_pinned_client_refuses_every_directory_the_server_can_make_alone(world, tmp_path):
    config = make_config(range(N), BITS, LENGTH, neighbours_k=K, threshold=T)
    local = LocalRound(config)
    puppets = {c: k for c, k in local.identity_keys.items() if c != VICTIM}
    substituted = {VICTIM: world.keys[VICTIM], **puppets}
    pins = world.pins(tmp_path)
    # 1. the server's unsigned list
    with pytest.raises(DirectoryRefusedError, match="unsigned directory"):
        pins.accept(substituted)
    # 2. signed by an authority the server made itself
    with pytest.raises(DirectoryRefusedError, match="not by the pinned authority"):
        pins.accept(sign_directory(IdentityKey.generate(), RUN, 2, substituted))
    # 3. the genuine signature over substituted keys
    tampered = SignedDirectory(sign_directory(IdentityKey.generate(), RUN, 1, substituted).directory,
                               world.genuine.authority_public_key, world.genuine.signature)
    with pytest.raises(DirectoryRefusedError, match="does not verify"):
        pins.accept(tampered)
    # 4. a genuine directory of another run
    with pytest.raises(DirectoryRefusedError, match="for run 42, not run 41"):
        pins.accept(sign_directory(world.authority, RUN + 1, 1, world.keys))
    assert not pins.keys  # nothing refused was pinned
    # The genuine directory is accepted ...
    assert pins.accept(world.genuine) == world.keys
    # ... and with it the puppets cannot pass as the neighbours: their advertisements do not verify.
    local.identities[VICTIM] = world.identities[VICTIM]
    local.identity_keys[VICTIM] = world.keys[VICTIM]
    local.clients = {c: SecAggClient(c, local.identities[c], local.identity_keys) for c in range(N)}
    victim = local.clients[VICTIM] = SecAggClient(VICTIM, world.identities[VICTIM], world.keys)
    local.server = SecAggServer(config, local.identity_keys)
    local.step()  # advertise keys
    request = local.server.broadcast()[VICTIM]
    with pytest.raises(ProtocolError, match="signature"):
        victim.handle(request)


def test_a_neighbours_key_change_and_a_rollback_are_refused_even_if_signed(world, tmp_path):
    pins = world.pins(tmp_path)
    pins.accept(world.genuine)
    replaced = {**world.keys, 3: IdentityKey.generate().public_bytes}
    with pytest.raises(DirectoryRefusedError, match="client 3's identity key changed since this client first saw"):
        pins.accept(sign_directory(world.authority, RUN, 2, replaced))
    added = {**world.keys, N: IdentityKey.generate().public_bytes}
    assert N in pins.accept(sign_directory(world.authority, RUN, 3, added))  # adding a client: the authority may
    with pytest.raises(DirectoryRefusedError, match="older than version 3"):
        pins.accept(world.genuine)
    # The pins survive a restart (a new process reads the same file).
    again = DirectoryPins(pins.path, VICTIM, world.keys[VICTIM], RUN)
    assert again.version == 3 and again.authority_public_key == world.authority.public_bytes
    with pytest.raises(DirectoryRefusedError, match="changed since"):
        again.accept(sign_directory(world.authority, RUN, 4, replaced))
    assert stat.S_IMODE(pins.path.stat().st_mode) == 0o600


def test_a_directory_without_the_client_or_with_another_key_for_it_is_refused(world, tmp_path):
    pins = world.pins(tmp_path)
    others = {c: k for c, k in world.keys.items() if c != VICTIM}
    with pytest.raises(DirectoryRefusedError, match="does not list client 0 with its own identity key"):
        pins.accept(sign_directory(world.authority, RUN, 1, others))
    with pytest.raises(DirectoryRefusedError, match="does not list client 0"):
        pins.accept(sign_directory(world.authority, RUN, 1, {**others, VICTIM: IdentityKey.generate().public_bytes}))


def test_no_pinned_authority_means_no_directory_and_another_authority_cannot_be_pinned_later(world, tmp_path):
    pins = world.pins(tmp_path, pin=False)
    with pytest.raises(DirectoryRefusedError, match="no authority pinned"):
        pins.accept(world.genuine)
    pins.pin_authority(public_key=world.authority.public_bytes)
    with pytest.raises(DirectoryRefusedError, match="refusing another authority"):
        pins.pin_authority(fingerprint_text=fingerprint(IdentityKey.generate().public_bytes))
    pins.pin_authority(fingerprint_text=fingerprint(world.authority.public_bytes).upper().replace("-", ":"))


def test_signed_directories_round_trip_and_malformed_ones_are_refused(world):
    again = SignedDirectory.from_bytes(world.genuine.to_bytes())
    assert again == world.genuine and again.self_verified().identity_keys == world.keys
    values = json.loads(world.genuine.to_bytes())
    for bad in ({**values, "format": "x"}, {**values, "identity_keys": {"a": "00"}}, {**values, "version": 0},
                {**values, "signature": "00"}, {**values, "identity_keys": {}}):
        with pytest.raises(AuthorityError):
            SignedDirectory.from_json(bad)
    with pytest.raises(AuthorityError):
        SignedDirectory.from_bytes(b"{not json")


def test_fingerprints_are_stable_and_normalised(world):
    text = fingerprint(world.authority.public_bytes)
    assert len(text) == 39 and normalise_fingerprint(text.upper().replace("-", " ")) == text
    assert fingerprint(IdentityKey.generate().public_bytes) != text
    with pytest.raises(AuthorityError, match="32 hex digits"):
        normalise_fingerprint("abcd")


def test_the_authority_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "operator" / "authority.key"
    key = create_authority_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_authority_key(path).public_bytes == key.public_bytes
    with pytest.raises(KeyFileError, match="already exists"):
        create_authority_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="accessible by other users"):
        load_authority_key(path)


def test_pins_live_beside_the_key_file():
    assert pins_path("/keys/client-3.key", "7-x").name == "client-3.run-7-x.directory"


def test_the_client_runtime_uses_only_a_directory_its_pinned_authority_signed(tmp_path):
    from federation.client_runtime import ClientRefusedError, ClientRuntime
    from federation.config import RunConfig

    config = RunConfig(clients=4, model="logreg", rounds=1)
    authority = IdentityKey.generate()
    unpinned = ClientRuntime(0, config, RUN, tmp_path / "other")
    assert not unpinned.authority_pinned
    runtime = ClientRuntime(0, config, RUN, tmp_path, authority_fingerprint=fingerprint(authority.public_bytes))
    assert runtime.authority_pinned
    keys = {0: runtime.keys.identity.public_bytes, **{c: IdentityKey.generate().public_bytes for c in (1, 2, 3)}}
    with pytest.raises(ClientRefusedError, match="unsigned directory"):
        runtime.set_directory(keys)
    with pytest.raises(ClientRefusedError, match="not by the pinned authority"):
        runtime.set_directory(sign_directory(IdentityKey.generate(), RUN, 1, keys).to_bytes())
    assert runtime._identity_directory == {}
    assert runtime.set_directory(sign_directory(authority, RUN, 1, keys).to_bytes()) == keys
    assert runtime._identity_directory == keys
    # A restarted client keeps its pins: another authority's fingerprint is refused.
    with pytest.raises(DirectoryRefusedError, match="refusing another authority"):
        ClientRuntime(0, config, RUN, tmp_path, authority_fingerprint=fingerprint(IdentityKey.generate().public_bytes))
