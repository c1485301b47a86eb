"""Attack tests for the consistency round: a scripted deviating server against real clients.

Each attack is first run against clients without the defence (``consistency_check=False``, the
protocol before the consistency round) and must SUCCEED there: the victim's input comes out
exact. Then the same attack must fail against the defended clients, for the stated reason.
"""

import dataclasses

import numpy as np
import pytest

from secagg.errors import ConsistencyError, ProtocolError, RoundAbortedError
from secagg.graph import default_parameters
from secagg.stages import CONSISTENCY
from secagg.wire import ConsistencyRequest, SurvivorSignature, decode_message
from tests.secagg.deviating_server import DeviatingServer

# The k:t ratio of the parameter table's rows for n >= 65, at a size where every holder counts.
SMALL = (14, 12, 6)


def victim_of(server):
    return server.survivors[3]


def share_split_asks(server, victim):
    """The share-split attack: the seed side is asked honestly (the victim's seed share), the
    key side is told the victim dropped (its mask-key share). Everyone sees one survivor set."""
    seed_side, key_side = server.split(victim)
    asks = [(h, server.honest_unmask_request(h)) for h in seed_side if h in server.graph.holders(victim)]
    asks += [(h, server.key_request(h, victim)) for h in key_side if h in server.graph.holders(victim)]
    return asks


def assert_attack_succeeds(server, victim, asks):
    seeds, keys, refusals = server.gather(victim, asks)
    assert not refusals
    recovered = server.recover_input(victim, seeds, keys)
    assert recovered is not None and np.array_equal(recovered, server.vectors[victim])


@pytest.mark.parametrize(
    "n, k, t",
    [SMALL, (100, *default_parameters(100))],  # n = 100: the table's first column, (k, t) = (12, 6)
    ids=["n14-k12-t6", "n100-table-row"],
)
def test_share_split_attack_reads_the_victims_input_without_the_defence_and_is_refused_with_it(n, k, t):
    assert (k, t) == (12, 6)
    undefended = DeviatingServer(n, k, t, consistency_check=False)
    victim = victim_of(undefended)
    assert_attack_succeeds(undefended, victim, share_split_asks(undefended, victim))

    defended = DeviatingServer(n, k, t, consistency_check=True)
    defended.sign_everywhere()  # one view: every survivor signed the true set
    asks = share_split_asks(defended, victim)
    seeds, keys, refusals = defended.gather(victim, asks)
    key_askers = len([h for h in defended.split(victim)[1] if h in defended.graph.holders(victim)])
    assert len(refusals) == key_askers >= t
    assert all(isinstance(e, ConsistencyError) and "deviates from the signed survivor set" in str(e) for e in refusals)
    assert keys == [] and defended.recover_input(victim, seeds, keys) is None
    # And nobody who answered revealed the victim's key share.
    assert all(victim not in c.revealed_key_owners for c in defended.clients.values())


def split_view_attack(server, victim):
    """Split views: the seed side is told the true set, the key side a set without the victim;
    each side signs its own set and gets its own side's signatures forwarded."""
    seed_side, key_side = server.split(victim)
    everyone = set(server.survivors)
    views = {c: everyone for c in seed_side} | {c: everyone - {victim} for c in key_side}
    signatures = server.sign_views(views)
    seed_sigs = {c: signatures[c] for c in seed_side}
    key_sigs = {c: signatures[c] for c in key_side}
    holders = server.graph.holders(victim)
    asks = [(h, server.unmask_request(h, everyone, seed_sigs)) for h in seed_side if h in holders]
    asks += [(h, server.unmask_request(h, everyone - {victim}, key_sigs)) for h in key_side if h in holders]
    return asks


def test_split_views_need_two_quorums_so_a_majority_floor_stops_them():
    n, k, t = SMALL
    # With the quorum at t (6) two disjoint halves of 7 can each sign their own set: the
    # partition the module docstring warns about, shown so the next assertion can fail.
    weak = DeviatingServer(n, k, t, consistency_check=True)
    victim = victim_of(weak)
    assert_attack_succeeds(weak, victim, split_view_attack(weak, victim))
    # A floor above n / 2 (8 of 14): no two disjoint signer sets reach it, each side refuses.
    strong = DeviatingServer(n, k, t, consistency_check=True, client_floor=n // 2 + 1)
    seeds, keys, refusals = strong.gather(victim, split_view_attack(strong, victim))
    assert seeds == [] and keys == [] and len(refusals) == k + 1
    assert all(isinstance(e, ConsistencyError) and "7 consistency signatures, it needs 8" in str(e) for e in refusals)


def test_split_views_at_a_table_row_are_stopped_by_a_majority_floor():
    n = 100
    k, t = default_parameters(n)
    undefended = DeviatingServer(n, k, t, consistency_check=False)
    victim = victim_of(undefended)
    # Without the consistency round there is no view to split: the share split alone suffices.
    assert_attack_succeeds(undefended, victim, share_split_asks(undefended, victim))
    strong = DeviatingServer(n, k, t, consistency_check=True, client_floor=n // 2 + 1)
    seeds, keys, refusals = strong.gather(victim, split_view_attack(strong, victim))
    assert seeds == [] and keys == [] and len(refusals) == k + 1
    assert all(isinstance(e, ConsistencyError) and "50 consistency signatures, it needs 51" in str(e) for e in refusals)


# --- forged, insufficient, misdirected and replayed signatures ------------------------------------


@pytest.fixture()
def signed():
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    server.sign_everywhere()
    return server


def refused_with(server, holder, request, error_type, match):
    before = server.clients[holder].revealed_seed_owners, server.clients[holder].revealed_key_owners
    with pytest.raises(error_type, match=match):
        server.ask(holder, request)
    assert (server.clients[holder].revealed_seed_owners, server.clients[holder].revealed_key_owners) == before
    assert before == (frozenset(), frozenset())


def test_the_honest_unmask_request_is_answered(signed):
    reply = signed.ask(0, signed.honest_unmask_request(0))
    assert [s.owner for s in reply.seed_shares] == sorted(signed.graph.holders(0))


def test_a_forged_signature_is_refused(signed):
    honest = signed.honest_unmask_request(0)
    forged = list(honest.signatures)
    forged[1] = SurvivorSignature(forged[1].signer, bytes(64))
    request = honest.__class__(**{**honest.__dict__, "signatures": tuple(forged)})
    refused_with(signed, 0, request, ConsistencyError, f"signature of client {forged[1].signer} does not verify")


def test_too_few_signatures_are_refused(signed):
    honest = signed.honest_unmask_request(0)
    request = honest.__class__(**{**honest.__dict__, "signatures": honest.signatures[:2]})
    refused_with(signed, 0, request, ConsistencyError, "2 consistency signatures, it needs 3")


def test_a_signature_by_a_client_outside_the_set_is_refused():
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    everyone = set(server.survivors)
    signatures = server.sign_views({c: everyone - {6} for c in everyone - {6}})
    signatures |= server.sign_views({6: everyone})
    request = server.unmask_request(0, everyone - {6}, signatures)
    refused_with(server, 0, request, ConsistencyError, r"outside the signed survivor set \[6\]")


def test_signatures_on_a_different_set_are_refused():
    # Clients 0-3 sign the true set; 4-6 are told client 3 dropped. Forward the 4-6 signatures
    # (on the other set) to client 0: they do not verify on the set client 0 signed.
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    everyone = set(server.survivors)
    signatures = server.sign_views({c: everyone for c in range(4)} | {c: everyone - {3} for c in range(4, 7)})
    request = server.unmask_request(0, everyone, {c: signatures[c] for c in range(4, 7)})
    refused_with(server, 0, request, ConsistencyError, "does not verify on the survivor set it signed")
    # The same three signatures on the set they were made on are enough for client 4.
    assert server.ask(4, server.unmask_request(4, everyone - {3}, {c: signatures[c] for c in range(4, 7)}))


def test_a_client_signs_one_survivor_set_per_round():
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    everyone = set(server.survivors)
    first = server.sign_views({0: everyone})
    assert server.sign_views({0: everyone}) == first  # a lost reply: the same signature again
    with pytest.raises(ConsistencyError, match="already signed a survivor set"):
        server.sign_views({0: everyone - {5}})


def test_a_survivor_set_shrunk_below_the_clients_floor_is_refused_before_signing():
    n, k, t = SMALL
    server = DeviatingServer(n, k, t, consistency_check=True, client_floor=10)
    shrunk = set(server.survivors[:9])
    with pytest.raises(RoundAbortedError, match="9 clients, below its floor of 10"):
        server.sign_views({0: shrunk})
    assert server.clients[0].signed_survivors is None
    assert server.sign_views({0: set(server.survivors[:10])})  # at the floor it signs
    # The config's floor (t here) binds too when the client has none of its own.
    plain = DeviatingServer(n, k, t, consistency_check=True)
    with pytest.raises(RoundAbortedError, match="5 clients, below its floor of 6"):
        plain.sign_views({0: set(plain.survivors[:5])})


def test_a_replayed_consistency_message_from_another_round_is_refused():
    first = DeviatingServer(7, 6, 3, consistency_check=True, round_index=1)
    second = DeviatingServer(7, 6, 3, consistency_check=True, round_index=2)
    first.sign_everywhere()
    everyone = set(first.survivors)
    # 1. The consistency request of round 1 sent to a client of round 2: the header does not match.
    stale = ConsistencyRequest(1, first.local.config.instance_nonce, tuple(sorted(everyone))).to_bytes()
    with pytest.raises(ProtocolError, match="message for round 1; this round is 2"):
        second.clients[0].handle(stale)
    # 2. Round 1's signatures (same clients, same set) forwarded in round 2: they name round 1's
    #    nonce and instance id, so they do not verify on round 2's transcript.
    second.sign_everywhere()
    replayed = decode_message(first.local.server.broadcast()[0]).signatures
    honest = second.honest_unmask_request(1)
    request = honest.__class__(**{**honest.__dict__, "signatures": replayed})
    refused_with(second, 1, request, ConsistencyError, "signature of client 0 does not verify on the survivor set")
    # Client 0 sees its own old signature first: not the one it made this round.
    honest = second.honest_unmask_request(0)
    request = honest.__class__(**{**honest.__dict__, "signatures": replayed})
    refused_with(second, 0, request, ConsistencyError, "forwarded as its own is not the one it made")
    # 3. The same round index with another instance (a retried round): also refused.
    retry = DeviatingServer(7, 6, 3, consistency_check=True, round_index=1)
    retry.sign_everywhere()
    honest = retry.honest_unmask_request(1)
    request = honest.__class__(**{**honest.__dict__, "signatures": replayed})
    refused_with(retry, 1, request, ConsistencyError, "does not verify")


def test_unmask_without_a_signed_set_is_out_of_order():
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    config = server.local.config
    request = server.unmask_request(0, set(server.survivors), {})
    assert request.round_index == config.round_index
    with pytest.raises(ProtocolError, match="expected ConsistencyRequest"):
        server.ask(0, request)


def test_signatures_beyond_the_quorum_are_not_examined(signed):
    # The client verifies the first quorum (3) signatures by signer; a quorum of valid ones is
    # the guarantee, so junk after them changes nothing (and costs nothing to check).
    honest = signed.honest_unmask_request(0)
    assert [s.signer for s in honest.signatures] == [0, 1, 2]  # the server forwards the quorum only
    tail = (*honest.signatures, SurvivorSignature(6, bytes(64)))
    request = honest.__class__(**{**honest.__dict__, "signatures": tail})
    assert signed.ask(0, request) == signed.ask(0, honest)


def test_a_substituted_own_signature_is_refused(signed):
    honest = signed.honest_unmask_request(0)
    own = [entry for entry in honest.signatures]
    own[0] = SurvivorSignature(0, own[1].signature)
    request = honest.__class__(**{**honest.__dict__, "signatures": tuple(own)})
    refused_with(signed, 0, request, ConsistencyError, "forwarded as its own is not the one it made")


# --- the server verifies no more signatures than the quorums need --------------------------------


def consistency_replies(server):
    assert server.local.server.stage == CONSISTENCY
    return server.local.collect()


def test_the_server_checks_signatures_at_the_door_until_it_holds_a_quorum():
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    replies = consistency_replies(server)
    forged = dataclasses.replace(decode_message(replies[5]), signature=bytes(64)).to_bytes()
    with pytest.raises(ProtocolError, match="consistency signature of client 5 does not verify"):
        server.local.server.receive(5, forged)  # nothing verified yet: checked at the door
    server.local.deliver({c: replies[c] for c in (0, 1, 2)})  # three verified: the quorum
    server.local.server.receive(3, dataclasses.replace(decode_message(replies[3]), signature=bytes(64)).to_bytes())
    server.local.deliver({c: replies[c] for c in (4, 5, 6)})
    server.local.advance()  # client 3's junk was never needed, never forwarded
    assert {tuple(s.signer for s in decode_message(r).signatures) for r in server.local.server.broadcast().values()} \
        == {(0, 1, 2)}
    server.local.step()
    result = server.local.server.result
    assert 3 in result.survivors and np.array_equal(
        result.sum, sum(server.vectors[c].astype(np.uint64) for c in range(7)) % 2**16)


def test_a_bad_signature_needed_for_a_larger_quorum_drops_its_signer_at_the_close():
    server = DeviatingServer(7, 6, 3, consistency_check=True)
    replies = consistency_replies(server)
    server.local.deliver({c: replies[c] for c in (0, 1, 2)})
    server.local.server.receive(3, dataclasses.replace(decode_message(replies[3]), signature=bytes(64)).to_bytes())
    # Client 6 demands 5 signatures: its own is checked at the door (4 verified), and at the
    # close the server checks the rest in signer order: 3 fails (dropped), 4 completes the five.
    server.local.deliver({4: replies[4], 5: replies[5],
                          6: dataclasses.replace(decode_message(replies[6]), quorum=5).to_bytes()})
    server.local.advance()
    requests = {c: decode_message(r) for c, r in server.local.server.broadcast().items()}
    assert sorted(requests) == [0, 1, 2, 4, 5, 6]  # client 3 deviated: not a signer
    assert [s.signer for s in requests[6].signatures] == [0, 1, 2, 4, 6]
    assert [s.signer for s in requests[0].signatures] == [0, 1, 2]
    server.local.step()
    result = server.local.server.result
    assert result.dropped[CONSISTENCY] == {3} and 3 in result.survivors  # its masked input is in the sum
    assert np.array_equal(result.sum, sum(server.vectors[c].astype(np.uint64) for c in range(7)) % 2**16)


def test_a_survivor_set_the_client_can_refute_is_not_signed():
    server = DeviatingServer(10, 4, 3, consistency_check=True)
    me = 0
    everyone = set(server.survivors)
    with pytest.raises(ProtocolError, match="is not in the survivor set"):
        server.sign_views({me: everyone - {me}})
    with pytest.raises(ProtocolError, match="not sampled for this round: \\[99\\]"):
        server.sign_views({me: everyone | {99}})
    assert server.clients[me].signed_survivors is None
    # A neighbour that never shared keys with this client cannot be a survivor (complete graph:
    # every client is a neighbour of every other).
    silent = 6
    fresh = DeviatingServer(7, 6, 3, consistency_check=True, share_dropouts={silent})
    assert silent not in fresh.survivors
    with pytest.raises(ProtocolError, match=f"never shared keys with client {me}: \\[{silent}\\]"):
        fresh.sign_views({me: set(fresh.survivors) | {silent}})
