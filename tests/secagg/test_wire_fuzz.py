"""Fuzzed and mutated wire bytes: parsers raise MalformedMessageError and nothing else; the
server and the clients raise only ProtocolError (or its subclasses) and a refused message
changes nothing: the round still completes with the exact sum afterwards."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.errors import MalformedMessageError, ProtocolError
from secagg.simulate import LocalRound, make_config
from secagg.stages import STAGES
from secagg.wire import decode_message

N, K, T, BITS, LENGTH = 3, 2, 2, 5, 8
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutations(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "header", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        mutated = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            mutated[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(mutated)
    if kind == "header":  # any of magic, version, type, round, nonce, or the first body bytes
        position = draw(st.integers(0, min(len(data), 60) - 1))
        return data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
    position = draw(st.integers(0, len(data)))
    chunk = draw(st.binary(min_size=1, max_size=16))
    if kind == "insert":
        return data[:position] + chunk + data[position:]
    return data[:position] + chunk + data[position + len(chunk) :]


def fresh_round(stage_index):
    vectors = {i: np.arange(LENGTH, dtype=np.uint32) * (i + 1) % 2**BITS for i in range(N)}
    local = LocalRound(make_config(range(N), BITS, LENGTH, neighbours_k=K, threshold=T), vectors)
    for _ in range(stage_index):
        local.step()
    return local, vectors


def exact(vectors):
    return (sum(v.astype(np.uint64) for v in vectors.values()) % 2**BITS).astype(np.uint32)


@FUZZ
@given(data=st.data(), stage_index=st.integers(0, 3), sender=st.integers(0, N - 1))
def test_mutated_replies_are_refused_by_the_server_without_changing_its_state(data, stage_index, sender):
    local, vectors = fresh_round(stage_index)
    replies = local.collect()
    mutated = data.draw(mutations(replies[sender]), label="mutated")
    pending, stage = local.server.pending(), local.server.stage
    try:
        local.server.receive(sender, mutated)
    except ProtocolError:
        assert local.server.pending() == pending and local.server.stage == stage
    else:
        return  # a mutation that is itself a valid reply (e.g. other masked bits); nothing to check
    local.deliver(replies)
    local.advance()
    while local.server.stage is not None:
        local.step()
    assert np.array_equal(local.server.result.sum, exact(vectors))


@FUZZ
@given(data=st.data(), stage_index=st.integers(0, 3), recipient=st.integers(0, N - 1))
def test_mutated_requests_are_refused_by_clients_without_changing_their_state(data, stage_index, recipient):
    local, vectors = fresh_round(stage_index)
    request = local.server.broadcast()[recipient]
    mutated = data.draw(mutations(request), label="mutated")
    client = local.clients[recipient]
    stage = client.stage
    try:
        client.handle(mutated)
    except ProtocolError:
        assert client.stage == stage
    else:
        return  # accepted: e.g. a flipped bit in a key the client cannot check until later
    while local.server.stage is not None:
        local.step()
    assert np.array_equal(local.server.result.sum, exact(vectors))


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_are_only_ever_malformed(blob):
    with pytest.raises(MalformedMessageError):
        decode_message(blob)


def test_every_message_of_a_real_round_survives_single_bit_flips_with_only_protocol_errors():
    # Exhaustive over positions (one flip per byte, rotating bit) for every message of a round.
    local, _ = fresh_round(0)
    for _ in STAGES:
        requests = local.server.broadcast()
        replies = local.collect()
        for data in [*requests.values(), *replies.values()]:
            for position in range(len(data)):
                mutated = bytearray(data)
                mutated[position] ^= 1 << (position % 8)
                try:
                    decode_message(bytes(mutated))
                except MalformedMessageError:
                    pass
        local.deliver(replies)
        local.advance()
