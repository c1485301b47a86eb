"""Refusals, each for the right reason: forged or swapped keys, tampered ciphertexts and shares,
wrong instance ids, replays, out-of-order and unknown senders, and unsafe unmask requests."""

import dataclasses

import numpy as np
import pytest

from secagg.errors import (
    AuthenticationError,
    MalformedMessageError,
    ProtocolError,
    RoundAbortedError,
    UnsafeRequestError,
)
from secagg.client import SecAggClient
from secagg.keys import IdentityKey
from secagg.round_keys import advertisement_transcript
from secagg.shamir import Share, split_secret
from secagg.simulate import LocalRound, make_config
from secagg.stages import SHARE_KEYS, UNMASK
from secagg.wire import (
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    EncryptedShare,
    RevealedShare,
    decode_message,
)

BITS, LENGTH = 12, 24


def new_round(n=5, k=None, t=3, round_index=4):
    vectors = {i: np.full(LENGTH, i + 1, dtype=np.uint32) for i in range(n)}
    config = make_config(range(n), BITS, LENGTH, neighbours_k=n - 1 if k is None else k, threshold=t,
                         round_index=round_index)
    return LocalRound(config, vectors), vectors


def expected_sum(vectors, survivors):
    return sum(int(vectors[i][0]) for i in survivors) % 2**BITS


def finish(local, skip=()):
    while local.server.stage is not None:
        local.step(skip=skip)
    return local.server.result


def assert_rejected_without_effect(local, client_id, data, error_type, match):
    pending = local.server.pending()
    stage = local.server.stage
    with pytest.raises(error_type, match=match) as caught:
        local.server.receive(client_id, data)
    assert local.server.pending() == pending and local.server.stage == stage
    return caught.value


# --- advertisements ------------------------------------------------------------------------------


def test_forged_advertisement_signature_is_rejected_and_the_round_goes_on():
    local, vectors = new_round()
    replies = local.collect()
    honest = decode_message(replies[2])
    forged_signature = IdentityKey.generate().sign(b"anything")
    forged = dataclasses.replace(honest, signature=forged_signature).to_bytes()
    error = assert_rejected_without_effect(local, 2, forged, ProtocolError, "signature does not verify")
    assert isinstance(error.__cause__, AuthenticationError)
    local.deliver(replies)
    local.advance()
    assert expected_sum(vectors, range(5)) == int(finish(local).sum[0])


def test_advertisement_signed_by_another_enrolled_client_is_rejected():
    local, _ = new_round()
    replies = local.collect()
    honest = decode_message(replies[2])
    # Client 3 signs keys of its own choosing but claims to be client 2.
    transcript = advertisement_transcript(local.config, 2, honest.mask_public_key, honest.encryption_public_key)
    stolen = dataclasses.replace(honest, signature=local.identities[3].sign(transcript)).to_bytes()
    assert_rejected_without_effect(local, 2, stolen, ProtocolError, "signature does not verify")


def test_swapped_advertised_keys_fail_the_signature():
    local, _ = new_round()
    honest = decode_message(local.collect()[1])
    swapped = dataclasses.replace(
        honest, mask_public_key=honest.encryption_public_key, encryption_public_key=honest.mask_public_key
    ).to_bytes()
    assert_rejected_without_effect(local, 1, swapped, ProtocolError, "signature does not verify")


def test_a_client_that_saw_another_application_config_cannot_join():
    local, _ = new_round()
    other = dataclasses.replace(local.config, application_config=b"lattice=Z")
    reply = SecAggClient(1, local.identities[1], local.identity_keys).handle(
        AdvertiseKeysRequest.for_config(other).to_bytes()
    )
    assert_rejected_without_effect(local, 1, reply, ProtocolError, "signature does not verify")


def test_a_repeated_or_degenerate_public_key_is_rejected():
    local, _ = new_round()
    replies = local.collect()
    local.deliver({1: replies[1]})
    first = decode_message(replies[1])
    def signed_by_2(mask_key, encryption_key):
        transcript = advertisement_transcript(local.config, 2, mask_key, encryption_key)
        return AdvertiseKeysResponse(local.config.round_index, local.config.instance_nonce, 2, mask_key,
                                     encryption_key, local.identities[2].sign(transcript)).to_bytes()

    copied = signed_by_2(first.mask_public_key, decode_message(replies[2]).encryption_public_key)
    assert_rejected_without_effect(local, 2, copied, ProtocolError, "repeated public key")
    low_order = signed_by_2(bytes(32), decode_message(replies[2]).encryption_public_key)
    error = assert_rejected_without_effect(local, 2, low_order, ProtocolError, "invalid X25519 key")
    assert error.__cause__ is not None


def test_the_client_refuses_a_relay_that_swaps_a_neighbours_keys():
    local, _ = new_round()
    local.step()
    request = decode_message(local.server.broadcast()[0])
    entries = list(request.advertisements)
    entries[3] = dataclasses.replace(
        entries[3], mask_public_key=entries[3].encryption_public_key, encryption_public_key=entries[3].mask_public_key
    )
    tampered = dataclasses.replace(request, advertisements=tuple(entries)).to_bytes()
    with pytest.raises(ProtocolError, match="advertisement of client 3: signature") as caught:
        local.clients[0].handle(tampered)
    assert isinstance(caught.value.__cause__, AuthenticationError)
    assert local.clients[0].stage == SHARE_KEYS  # nothing changed; the honest request still works
    local.clients[0].handle(local.server.broadcast()[0])


def test_the_client_refuses_a_relay_that_does_not_echo_its_own_keys():
    local, _ = new_round()
    local.step()
    request = decode_message(local.server.broadcast()[0])
    others = tuple(entry for entry in request.advertisements if entry.client_id != 0)
    with pytest.raises(ProtocolError, match="own keys"):
        local.clients[0].handle(dataclasses.replace(request, advertisements=others).to_bytes())


def test_the_client_refuses_an_unknown_or_unenrolled_advertiser():
    local, _ = new_round()
    local.step()
    request = decode_message(local.server.broadcast()[0])
    entries = list(request.advertisements)
    entries.append(dataclasses.replace(entries[-1], client_id=99))
    with pytest.raises(ProtocolError, match="not sampled"):
        local.clients[0].handle(dataclasses.replace(request, advertisements=tuple(entries)).to_bytes())


# --- share ciphertexts and instance ids ----------------------------------------------------------


def collect_share_keys(local):
    local.step()
    return local.collect()


def test_a_tampered_share_ciphertext_is_caught_by_its_recipient():
    local, _ = new_round()
    replies = collect_share_keys(local)
    message = decode_message(replies[1])
    shares = list(message.shares)
    flipped = bytearray(shares[0].ciphertext)
    flipped[40] ^= 1
    shares[0] = EncryptedShare(shares[0].peer, bytes(flipped))
    replies[1] = dataclasses.replace(message, shares=tuple(shares)).to_bytes()
    local.deliver(replies)  # the server cannot open shares; it relays them
    local.advance()
    victim = shares[0].peer
    with pytest.raises(ProtocolError, match="from client 1 fails authentication") as caught:
        local.clients[victim].handle(local.server.broadcast()[victim])
    assert isinstance(caught.value.__cause__, AuthenticationError)


def test_a_share_relayed_to_the_wrong_recipient_fails_its_associated_data():
    local, _ = new_round()
    local.deliver(collect_share_keys(local))
    local.advance()
    requests = local.server.broadcast()
    for_2 = decode_message(requests[2])
    for_3 = decode_message(requests[3])
    from_1_to_2 = next(share for share in for_2.shares if share.peer == 1)
    misrouted = [from_1_to_2 if share.peer == 1 else share for share in for_3.shares]
    with pytest.raises(ProtocolError, match="fails authentication"):
        local.clients[3].handle(dataclasses.replace(for_3, shares=tuple(misrouted)).to_bytes())


def test_different_advertisement_lists_give_different_instance_ids_and_the_round_fails_closed():
    # The relay shows one client a list without a far-away client: that client derives another
    # iid, so the shares it seals do not open at its neighbours.
    local, _ = new_round(n=10, k=4, t=2)
    local.step()
    ring = local.server.graph.ring
    victim, far_away, neighbour = ring[0], ring[5], ring[1]
    requests = local.server.broadcast()
    full = decode_message(requests[victim])
    partial = dataclasses.replace(
        full, advertisements=tuple(e for e in full.advertisements if e.client_id != far_away)
    ).to_bytes()
    replies = {cid: local.clients[cid].handle(partial if cid == victim else req) for cid, req in requests.items()}
    assert local.clients[victim].instance_id != local.clients[neighbour].instance_id
    local.deliver(replies)
    local.advance()
    with pytest.raises(ProtocolError, match=f"from client {victim} fails authentication"):
        local.clients[neighbour].handle(local.server.broadcast()[neighbour])


def test_a_share_from_a_non_neighbour_is_refused():
    local, _ = new_round(n=10, k=2, t=2)
    local.deliver(collect_share_keys(local))
    local.advance()
    requests = local.server.broadcast()
    ring = local.server.graph.ring
    recipient, stranger = ring[0], ring[5]
    request = decode_message(requests[recipient])
    extra = EncryptedShare(stranger, bytes(len(request.shares[0].ciphertext)))
    shares = tuple(sorted((*request.shares, extra), key=lambda share: share.peer))
    with pytest.raises(ProtocolError, match="not live neighbours"):
        local.clients[recipient].handle(dataclasses.replace(request, shares=shares).to_bytes())


def test_share_keys_reply_must_address_exactly_the_live_neighbours():
    local, _ = new_round(n=10, k=4, t=2)
    replies = collect_share_keys(local)
    message = decode_message(replies[3])
    short = dataclasses.replace(message, shares=message.shares[:-1]).to_bytes()
    assert_rejected_without_effect(local, 3, short, ProtocolError, "one share to each live neighbour")


# --- replay, order, identity ---------------------------------------------------------------------


def test_replayed_duplicate_reply_is_rejected():
    local, _ = new_round()
    replies = local.collect()
    local.deliver({0: replies[0]})
    assert_rejected_without_effect(local, 0, replies[0], ProtocolError, "duplicate or replay")


def test_reply_from_another_round_or_instance_is_rejected():
    local, _ = new_round(round_index=4)
    other_round, _ = new_round(round_index=3)
    old = other_round.collect()[0]
    assert_rejected_without_effect(local, 0, old, ProtocolError, "round 3, this is round 4")
    same_round, _ = new_round(round_index=4)  # same round index, other instance nonce
    assert_rejected_without_effect(local, 0, same_round.collect()[0], ProtocolError, "another instance")


def test_out_of_order_reply_is_rejected():
    local, _ = new_round()
    replies = local.collect()
    local.deliver(replies)
    local.advance()
    share_replies = local.collect()
    assert_rejected_without_effect(local, 0, replies[0], ProtocolError, "out of order")
    local.deliver(share_replies)
    local.advance()
    assert_rejected_without_effect(local, 1, share_replies[1], ProtocolError, "out of order")


def test_unknown_sender_and_impersonation_are_rejected():
    local, _ = new_round()
    replies = local.collect()
    assert_rejected_without_effect(local, 77, replies[0], ProtocolError, "unknown client 77")
    assert_rejected_without_effect(local, 1, replies[0], ProtocolError, "signed as client 0")
    assert_rejected_without_effect(local, True, replies[1], ProtocolError, "must be an int")


def test_a_client_dropped_earlier_cannot_come_back():
    local, _ = new_round()
    replies = local.collect()
    late_advert = replies.pop(4)
    local.deliver(replies)
    local.advance()
    assert_rejected_without_effect(local, 4, late_advert, ProtocolError, "out of order")
    share_replies = local.collect()
    forged = dataclasses.replace(decode_message(share_replies[0]), sender=4).to_bytes()
    assert_rejected_without_effect(local, 4, forged, ProtocolError, "not asked in stage share_keys")


def test_client_refuses_replays_other_rounds_and_other_recipients():
    local, _ = new_round()
    advertise = local.server.broadcast()[0]
    local.step()
    client = local.clients[0]
    with pytest.raises(ProtocolError, match="out of order"):
        client.handle(advertise)
    request = decode_message(local.server.broadcast()[0])
    with pytest.raises(ProtocolError, match="round 5"):
        client.handle(dataclasses.replace(request, round_index=5).to_bytes())
    with pytest.raises(ProtocolError, match="another instance"):
        client.handle(dataclasses.replace(request, instance_nonce=bytes(32)).to_bytes())
    with pytest.raises(MalformedMessageError):
        client.handle(b"FVSA")
    local.step()
    with pytest.raises(ProtocolError, match="addressed to client 1, not 0"):
        client.handle(local.server.broadcast()[1])


def test_client_not_sampled_or_without_input_refuses():
    local, _ = new_round()
    outsider = SecAggClient(50, IdentityKey.generate(), local.identity_keys)
    with pytest.raises(ProtocolError, match="not sampled"):
        outsider.handle(local.server.broadcast()[0])
    with pytest.raises(ProtocolError, match="before the round configuration"):
        outsider.set_input(np.zeros(LENGTH, dtype=np.uint32))
    local.vectors.pop(2)
    local.step()
    local.step()
    with pytest.raises(ProtocolError, match="no input set"):
        local.clients[2].handle(local.server.broadcast()[2])


# --- unmasking -----------------------------------------------------------------------------------


def advance_to_unmask(local, dropped_at_masked_input=(4,)):
    local.step()
    local.step()
    local.step(skip=dropped_at_masked_input)
    local.step()  # consistency: every survivor signs
    assert local.server.stage == UNMASK


def test_unmask_request_for_both_secrets_of_one_client_is_refused():
    local, _ = new_round()
    advance_to_unmask(local)
    client = local.clients[0]
    honest = decode_message(local.server.broadcast()[0])
    assert honest.key_owners == (4,) and 4 not in honest.seed_owners
    greedy = dataclasses.replace(honest, seed_owners=tuple(sorted({*honest.seed_owners, 4}))).to_bytes()
    with pytest.raises(UnsafeRequestError, match="both the seed and the mask-key share of clients \\[4\\]"):
        client.handle(greedy)
    assert client.revealed_seed_owners == frozenset() and client.revealed_key_owners == frozenset()


def test_unmask_requests_cannot_collect_the_two_shares_one_after_the_other():
    local, _ = new_round()
    advance_to_unmask(local)
    client = local.clients[0]
    honest = decode_message(local.server.broadcast()[0])
    first = client.handle(honest.to_bytes())
    assert client.handle(honest.to_bytes()) == first  # a retried request is answered again
    assert client.revealed_key_owners == {4}
    # Now claim client 1 dropped and ask for its key share: its seed share was already revealed.
    sneaky = dataclasses.replace(honest, seed_owners=(0,), key_owners=(1,)).to_bytes()
    with pytest.raises(UnsafeRequestError, match="already revealed the other share of clients \\[1\\]"):
        client.handle(sneaky)
    reversed_ask = dataclasses.replace(honest, seed_owners=(0, 4), key_owners=()).to_bytes()
    with pytest.raises(UnsafeRequestError, match="already revealed"):
        client.handle(reversed_ask)
    assert client.revealed_key_owners == {4} and 1 in client.revealed_seed_owners


def test_a_survivor_refuses_to_reveal_its_own_mask_key_share():
    local, _ = new_round()
    advance_to_unmask(local)
    honest = decode_message(local.server.broadcast()[0])
    own_key = dataclasses.replace(honest, seed_owners=(1, 2), key_owners=(0, 4)).to_bytes()
    with pytest.raises(UnsafeRequestError, match="its mask-key share is requested"):
        local.clients[0].handle(own_key)


def test_unmask_request_for_shares_the_client_does_not_hold_is_refused():
    local, _ = new_round(n=10, k=2, t=2)
    advance_to_unmask(local, dropped_at_masked_input=())
    ring = local.server.graph.ring
    honest = decode_message(local.server.broadcast()[ring[0]])
    stranger = ring[5]
    asks = dataclasses.replace(honest, seed_owners=tuple(sorted({*honest.seed_owners, stranger}))).to_bytes()
    with pytest.raises(ProtocolError, match=f"holds no shares of clients \\[{stranger}\\]"):
        local.clients[ring[0]].handle(asks)


def test_unmask_reply_must_reveal_exactly_what_was_asked_at_the_right_points():
    local, _ = new_round()
    advance_to_unmask(local)
    replies = local.collect()
    message = decode_message(replies[0])
    fewer = dataclasses.replace(message, seed_shares=message.seed_shares[:-1]).to_bytes()
    assert_rejected_without_effect(local, 0, fewer, ProtocolError, "exactly the requested shares")
    first = message.seed_shares[0]
    moved = Share(x=Share.from_bytes(first.share).x % 5 + 1, y=1)
    wrong_point = dataclasses.replace(
        message, seed_shares=(RevealedShare(first.owner, moved.to_bytes()), *message.seed_shares[1:])
    ).to_bytes()
    assert_rejected_without_effect(local, 0, wrong_point, ProtocolError, "wrong point")


def test_a_tampered_revealed_share_aborts_the_round_instead_of_a_wrong_sum():
    # The server rebuilds from t + 1 of the revealed shares, so tamper every holder's share of one
    # owner's seed, by offsets that are not a polynomial of degree < t in x: any t + 1 disagree.
    local, _ = new_round(n=5, t=2)
    advance_to_unmask(local)
    replies = local.collect()
    owner = decode_message(replies[0]).seed_shares[0].owner
    for position, (client_id, data) in enumerate(sorted(replies.items())):
        message = decode_message(data)
        shares = []
        for revealed in message.seed_shares:
            if revealed.owner == owner:
                share = Share.from_bytes(revealed.share)
                revealed = RevealedShare(owner, Share(share.x, (share.y + (position + 1) ** 3) % (2**521 - 1)).to_bytes())
            shares.append(revealed)
        replies[client_id] = dataclasses.replace(message, seed_shares=tuple(shares)).to_bytes()
    local.deliver(replies)
    with pytest.raises(RoundAbortedError, match="cannot rebuild"):
        local.advance()


def test_a_rebuilt_mask_key_that_does_not_match_the_advertised_key_aborts():
    # Every holder of client 4's key shares reveals a consistent sharing of some other key.
    local, _ = new_round(n=5, t=3)
    advance_to_unmask(local)
    replies = local.collect()
    other_key = bytes(range(32))
    points = {cid: Share.from_bytes(decode_message(r).key_shares[0].share).x for cid, r in replies.items()}
    fake = dict(zip(points, split_secret(other_key, 3, list(points.values()))))
    for cid, data in replies.items():
        message = decode_message(data)
        replies[cid] = dataclasses.replace(message, key_shares=(RevealedShare(4, fake[cid].to_bytes()),)).to_bytes()
    local.deliver(replies)
    with pytest.raises(RoundAbortedError, match="does not match its advertised public key"):
        local.advance()
    assert local.server.aborted


def test_too_few_unmask_replies_abort():
    local, _ = new_round(n=5, t=3)
    advance_to_unmask(local, dropped_at_masked_input=(3, 4))
    replies = local.collect()
    local.deliver({0: replies[0], 1: replies[1]})
    with pytest.raises(RoundAbortedError, match="only 2 shares"):
        local.advance()
