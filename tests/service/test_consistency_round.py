"""The consistency round in the HTTP round manager: the survivor set goes out, every signature is
checked at the door, all of them travel with each unmask request, and a client given a request
that deviates from the set it signed refuses it (the server's deviations are the client's to
catch; the manager's are tested in tests/secagg/test_consistency_attacks.py with a scripted server).
Dropouts and restarts at the consistency stage are in test_rounds.py (parametrized over STAGES).
"""

from __future__ import annotations

import dataclasses

import pytest

from federation.service.errors import ConflictError
from secagg.errors import ConsistencyError
from secagg.stages import CONSISTENCY, UNMASK
from secagg.wire import ConsistencyRequest, ConsistencyResponse, UnmaskRequest, decode_message
from tests.service.fleet import drive
from tests.service.test_rounds import assert_exact_sums, scripted_run


def test_unmask_requests_carry_every_survivors_signature_and_a_deviation_is_refused(
        repository, state, clock, small_config):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=1))
    drive(manager, fleet, clock, stop_after=(0, UNMASK))
    requests = {c.client_id: decode_message(manager.task(c.client_id).request) for c in fleet}
    assert all(isinstance(r, UnmaskRequest) for r in requests.values())
    # Each client declared its quorum (max(t, minimum_survivors) = 3 here): the first three
    # verified signatures by signer travel with every request.
    assert {tuple(s.signer for s in r.signatures) for r in requests.values()} == {(0, 1, 2)}
    client = fleet[0]
    honest = requests[0]
    victim = honest.seed_owners[-1]
    split = dataclasses.replace(honest, seed_owners=tuple(o for o in honest.seed_owners if o != victim),
                                key_owners=(victim,))
    with pytest.raises(ConsistencyError, match="deviates from the signed survivor set"):
        client._secagg.handle(split.to_bytes())
    stripped = dataclasses.replace(honest, signatures=honest.signatures[:2])
    with pytest.raises(ConsistencyError, match="2 consistency signatures, it needs 3"):
        client._secagg.handle(stripped.to_bytes())
    assert client._secagg.revealed_key_owners == frozenset() == client._secagg.revealed_seed_owners
    drive(manager, fleet, clock)  # the honest requests: the round completes with the exact sum
    assert assert_exact_sums(repository, run_id, fleet, manager.bits) == 1


def test_a_forged_or_misdirected_consistency_signature_is_refused_at_the_door(
        repository, state, clock, small_config):
    run_id, manager, fleet = scripted_run(repository, state, clock, small_config.replace(rounds=1))
    drive(manager, fleet, clock, stop_after=(0, CONSISTENCY))
    task = manager.task(0)
    request = decode_message(task.request)
    assert isinstance(request, ConsistencyRequest) and request.survivors == tuple(range(6))
    forged = ConsistencyResponse(request.round_index, request.instance_nonce, 0, 3, bytes(64)).to_bytes()
    with pytest.raises(ConflictError, match="consistency signature of client 0 does not verify"):
        manager.submit(0, 0, CONSISTENCY, forged)
    # Client 1's genuine signature sent as client 0's: refused too.
    signed_by_1 = decode_message(fleet[1]._secagg.handle(manager.task(1).request))
    relabelled = dataclasses.replace(signed_by_1, sender=0).to_bytes()
    with pytest.raises(ConflictError, match="does not verify"):
        manager.submit(0, 0, CONSISTENCY, relabelled)
    assert manager.task(0).request == task.request  # nothing was recorded: client 0 is still asked
    drive(manager, fleet, clock)
    assert assert_exact_sums(repository, run_id, fleet, manager.bits) == 1
