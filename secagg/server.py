"""The SecAgg+ server state machine: collects wire messages, closes stages, unmasks the sum.

Bonawitz et al., CCS 2017; Bell et al., CCS 2020 (docs/ALGORITHMS.md §1.1-1.6). Usage, per stage::

    for client_id, request in server.broadcast().items():   # send these bytes
        ...
    server.receive(client_id, reply_bytes)                  # for each reply that arrives
    server.advance()                                        # close the stage (timeout reached)

and ``server.result`` after the unmask stage. Client sets, as in the paper: A advertised keys,
U1 shared keys, U2 sent a masked input, U3 answered the unmask request.

Robustness: ``receive`` validates a message completely (parse, stage, round, instance, sender,
expected/duplicate, signatures, key and share checks) before it touches any state; a refused
message raises ``ProtocolError`` (or its ``MalformedMessageError``) and the round goes on.
``advance`` aborts the round with ``RoundAbortedError`` when fewer than t clients survive, or a
client has fewer than t live holders of its shares; nothing is requested after an abort.

Memory and time: masked inputs are summed as they arrive (O(m) memory, not O(n m)); the unmask
removes each survivor's self mask once and, for each dropped client d, only the pairwise terms of
its surviving neighbours: (|U2| + Σ_d |N(d) ∩ U2|) mask expansions, never O(n**2 m).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from secagg.config import RoundConfig, permutation_seed
from secagg.errors import (
    AuthenticationError,
    ConfigurationError,
    InconsistentSharesError,
    InvalidKeyError,
    NotEnoughSharesError,
    ProtocolError,
    RoundAbortedError,
)
from secagg.graph import HararyGraph
from secagg.keys import AgreementKeyPair, check_identity_keys, verify_signature
from secagg.masking import remove_pairwise_mask, remove_self_mask
from secagg.round_keys import advertisement_transcript, instance_id, pairwise_mask_seed
from secagg.shamir import Share, reconstruct_secret
from secagg.stages import ADVERTISE_KEYS, MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK
from secagg.wire import (
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInputRequest,
    MaskedInputResponse,
    ShareKeysRequest,
    ShareKeysResponse,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)

_SECRET_LENGTH = 32
_RESPONSES = {
    ADVERTISE_KEYS: AdvertiseKeysResponse,
    SHARE_KEYS: ShareKeysResponse,
    MASKED_INPUT: MaskedInputResponse,
    UNMASK: UnmaskResponse,
}

__all__ = ["AggregateResult", "SecAggServer"]


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The outcome of a completed round.

    Attributes:
        sum: Σ_{j ∈ survivors} x_j, ``(m,) uint32`` mod 2**b (read-only).
        survivors: U2, the clients whose inputs are in the sum.
        dropped: for each stage, the clients that did not answer it (they are not in later
            stages; clients dropped at UNMASK are still in the sum).
    """

    sum: np.ndarray
    survivors: frozenset[int]
    dropped: Mapping[str, frozenset[int]]


def _sampled_identity_keys(config: RoundConfig, identity_keys: object) -> dict[int, bytes]:
    checked = check_identity_keys(identity_keys)
    missing = [client_id for client_id in config.client_ids if client_id not in checked]
    if missing:
        raise ConfigurationError(f"no enrolled identity key for sampled clients {missing[:5]}")
    return {client_id: checked[client_id] for client_id in config.client_ids}


class SecAggServer:
    """The server's side of one SecAgg+ round.

    Args:
        config: the round's parameters (sent to every client in the first request).
        identity_keys: the enrolled Ed25519 public key of every sampled client, by id.
    """

    def __init__(self, config: RoundConfig, identity_keys: Mapping[int, bytes]) -> None:
        if not isinstance(config, RoundConfig):
            raise ConfigurationError(f"config must be a RoundConfig, got {type(config).__name__}")
        self._config = config
        self._identity_keys = _sampled_identity_keys(config, identity_keys)
        self._graph = HararyGraph.build(config.client_ids, config.neighbours_k, permutation_seed(config))
        # Only used to test advertised X25519 keys for low order at the door.
        self._probe_pair = AgreementKeyPair.generate()
        self._stage_index = 0
        self._abort_reason: str | None = None
        self._result: AggregateResult | None = None
        self._dropped: dict[str, frozenset[int]] = {}
        self._advertisements: dict[int, KeyAdvertisement] = {}  # A
        self._advertised_keys: set[bytes] = set()
        self._iid: bytes | None = None
        self._sealed: dict[int, dict[int, bytes]] = {}  # U1: source -> destination -> ciphertext
        self._masked_sum: np.ndarray | None = None
        self._masked_senders: set[int] = set()  # U2
        self._unmask_requests: dict[int, UnmaskRequest] = {}
        self._seed_shares: dict[int, list[Share]] = {}  # owner -> revealed shares of b_owner
        self._key_shares: dict[int, list[Share]] = {}  # owner -> revealed shares of its mask key
        self._unmask_responders: set[int] = set()  # U3
        self._responded: set[int] = set()
        request = AdvertiseKeysRequest.for_config(config).to_bytes()
        self._requests: dict[int, bytes] = {client_id: request for client_id in config.client_ids}

    # --- public state ------------------------------------------------------------------------

    @property
    def config(self) -> RoundConfig:
        return self._config

    @property
    def graph(self) -> HararyGraph:
        """The round's neighbour graph (public: derived from the instance nonce)."""
        return self._graph

    @property
    def stage(self) -> str | None:
        """The open stage, or None once the round is finished or aborted."""
        if self._result is not None or self._abort_reason is not None:
            return None
        return STAGES[self._stage_index]

    @property
    def aborted(self) -> str | None:
        """Why the round was aborted, or None."""
        return self._abort_reason

    @property
    def instance_id(self) -> bytes | None:
        return self._iid

    @property
    def result(self) -> AggregateResult:
        """The aggregate; ProtocolError before the unmask stage has been closed."""
        if self._result is None:
            raise ProtocolError(
                f"no result: the round was aborted ({self._abort_reason})"
                if self._abort_reason
                else f"no result yet: the round is in stage {self.stage}"
            )
        return self._result

    def pending(self) -> frozenset[int]:
        """Clients asked in the open stage that have not answered yet."""
        if self.stage is None:
            return frozenset()
        return frozenset(self._requests) - self._responded

    def broadcast(self) -> dict[int, bytes]:
        """The open stage's request for each client, as wire bytes (the same on every call).

        Raises:
            RoundAbortedError: the round was aborted.
        """
        self._check_open()
        return dict(self._requests)

    # --- receiving ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._abort_reason is not None:
            raise RoundAbortedError(f"the round was aborted: {self._abort_reason}")
        if self._result is not None:
            raise ProtocolError("the round is finished; no further messages are accepted")

    def receive(self, client_id: int, message: bytes) -> None:
        """Accept one client reply for the open stage.

        ``client_id`` is the sender as authenticated by the transport; it must match the id in the
        message. The message is validated completely before anything is recorded.

        Raises:
            MalformedMessageError: the bytes do not parse.
            ProtocolError: unknown or unexpected client, duplicate or replayed reply, wrong stage
                (masked inputs after the unmask request are discarded this way), wrong round or
                instance, or a failed check (signature, repeated key, wrong share set).
            RoundAbortedError: the round was aborted.
        """
        self._check_open()
        if isinstance(client_id, bool) or not isinstance(client_id, int):
            raise ProtocolError(f"client id must be an int, got {type(client_id).__name__}")
        if client_id not in self._identity_keys:
            raise ProtocolError(f"message from unknown client {client_id}")
        reply = decode_message(message)
        stage = STAGES[self._stage_index]
        expected = _RESPONSES[stage]
        if not isinstance(reply, expected):
            late = isinstance(reply, MaskedInputResponse) and stage == UNMASK
            raise ProtocolError(
                f"masked input of client {client_id} arrived after the unmask request; discarded"
                if late
                else f"out of order: stage {stage} expects {expected.__name__}, "
                f"client {client_id} sent {type(reply).__name__}"
            )
        if reply.round_index != self._config.round_index:
            raise ProtocolError(
                f"client {client_id}: reply for round {reply.round_index}, this is round "
                f"{self._config.round_index}"
            )
        if not hmac.compare_digest(reply.instance_nonce, self._config.instance_nonce):
            raise ProtocolError(f"client {client_id}: reply for another instance (nonce differs)")
        if reply.sender != client_id:
            raise ProtocolError(f"client {client_id} sent a message signed as client {reply.sender}")
        if client_id not in self._requests:
            raise ProtocolError(f"client {client_id} was not asked in stage {stage} (dropped earlier)")
        if client_id in self._responded:
            raise ProtocolError(f"client {client_id} already answered stage {stage}; duplicate or replay")
        if stage == ADVERTISE_KEYS:
            self._receive_advertisement(reply)
        elif stage == SHARE_KEYS:
            self._receive_shares(reply)
        elif stage == MASKED_INPUT:
            self._receive_masked_input(reply)
        else:
            self._receive_unmask(reply)
        self._responded.add(client_id)

    def _receive_advertisement(self, reply: AdvertiseKeysResponse) -> None:
        sender = reply.sender
        keys = (reply.mask_public_key, reply.encryption_public_key)
        if keys[0] == keys[1] or any(key in self._advertised_keys for key in keys):
            raise ProtocolError(f"client {sender} advertised a repeated public key")
        for key in keys:
            try:
                self._probe_pair.exchange(key)
            except InvalidKeyError as error:
                raise ProtocolError(f"client {sender} advertised an invalid X25519 key") from error
        transcript = advertisement_transcript(self._config, sender, *keys)
        try:
            verify_signature(self._identity_keys[sender], transcript, reply.signature)
        except AuthenticationError as error:
            raise ProtocolError(
                f"advertisement of client {sender}: signature does not verify "
                "(forged, swapped keys, or another round/config)"
            ) from error
        self._advertisements[sender] = KeyAdvertisement(sender, *keys, reply.signature)
        self._advertised_keys.update(keys)

    def _receive_shares(self, reply: ShareKeysResponse) -> None:
        sender = reply.sender
        destinations = [share.peer for share in reply.shares]
        expected = sorted(self._graph.neighbours(sender) & self._advertisements.keys())
        if destinations != expected:
            raise ProtocolError(
                f"client {sender} must send one share to each live neighbour {expected[:8]}, "
                f"sent to {destinations[:8]}"
            )
        self._sealed[sender] = {share.peer: share.ciphertext for share in reply.shares}

    def _receive_masked_input(self, reply: MaskedInputResponse) -> None:
        config = self._config
        if reply.bits != config.bits or reply.vector.shape[0] != config.vector_length:
            raise ProtocolError(
                f"client {reply.sender}: masked input of {reply.vector.shape[0]} coordinates at "
                f"{reply.bits} bits; the round uses {config.vector_length} at {config.bits}"
            )
        if self._masked_sum is None:
            self._masked_sum = np.zeros(config.vector_length, dtype=np.uint32)
        # uint32 addition wraps mod 2**32; 2**b divides 2**32, so reducing at the end is exact.
        np.add(self._masked_sum, reply.vector, out=self._masked_sum)
        self._masked_senders.add(reply.sender)

    def _receive_unmask(self, reply: UnmaskResponse) -> None:
        sender = reply.sender
        request = self._unmask_requests[sender]
        seed_owners = tuple(share.owner for share in reply.seed_shares)
        key_owners = tuple(share.owner for share in reply.key_shares)
        if seed_owners != request.seed_owners or key_owners != request.key_owners:
            raise ProtocolError(f"client {sender} did not reveal exactly the requested shares")
        parsed = []
        for kind, revealed in (("seed", reply.seed_shares), ("key", reply.key_shares)):
            for item in revealed:
                share = Share.from_bytes(item.share)  # MalformedMessageError on x = 0 or y >= p
                if share.x != self._graph.abscissa(item.owner, sender):
                    raise ProtocolError(
                        f"client {sender}: {kind} share of client {item.owner} has the wrong point"
                    )
                parsed.append((kind, item.owner, share))
        for kind, owner, share in parsed:
            (self._seed_shares if kind == "seed" else self._key_shares).setdefault(owner, []).append(share)
        self._unmask_responders.add(sender)

    # --- closing stages ----------------------------------------------------------------------

    def advance(self) -> None:
        """Close the open stage: record who dropped, check the round can continue safely, and
        prepare the next stage's requests (or, after UNMASK, compute the result).

        Raises:
            RoundAbortedError: fewer than t survivors, a client with fewer than t live holders,
                or a failed reconstruction; the round is over and nothing more is requested.
        """
        self._check_open()
        stage = STAGES[self._stage_index]
        live = frozenset(self._responded)
        self._dropped[stage] = frozenset(self._requests) - live
        try:
            if stage == ADVERTISE_KEYS:
                self._check_live(live, live, "advertised keys")
                self._close_advertise_keys()
            elif stage == SHARE_KEYS:
                self._check_live(live, live, "shared keys")
                self._close_share_keys()
            elif stage == MASKED_INPUT:
                self._check_live(live, live, "sent masked inputs")
                dropped = frozenset(self._sealed) - live
                self._check_live(dropped, live, "sent masked inputs", owners_dropped=True)
                self._close_masked_input()
            else:
                self._close_unmask()
        except RoundAbortedError as error:
            self._abort_reason = str(error)
            self._requests = {}
            raise
        self._responded = set()
        if self._result is None:
            self._stage_index += 1

    def _check_live(
        self, owners: frozenset[int], live: frozenset[int], what: str, owners_dropped: bool = False
    ) -> None:
        threshold = self._config.threshold
        minimum = self._config.minimum_survivors
        if not owners_dropped and len(live) < minimum:
            raise RoundAbortedError(
                f"only {len(live)} clients {what}; the round needs at least {minimum} "
                f"(threshold {threshold})"
            )
        for owner in sorted(owners):
            holders = len(self._graph.holders(owner) & live)
            if holders < threshold:
                raise RoundAbortedError(
                    f"client {owner} has {holders} live holders of its shares after "
                    f"{len(live)} clients {what}; the threshold is {threshold}"
                )

    def _close_advertise_keys(self) -> None:
        config = self._config
        advertisements = tuple(self._advertisements[i] for i in sorted(self._advertisements))
        self._iid = instance_id(config, advertisements)
        request = ShareKeysRequest(config.round_index, config.instance_nonce, advertisements).to_bytes()
        self._requests = {client_id: request for client_id in self._advertisements}

    def _close_share_keys(self) -> None:
        config = self._config
        requests = {}
        for recipient in sorted(self._sealed):
            shares = tuple(
                EncryptedShare(source, self._sealed[source][recipient])
                for source in sorted(self._graph.neighbours(recipient) & self._sealed.keys())
            )
            requests[recipient] = MaskedInputRequest(
                config.round_index, config.instance_nonce, recipient, shares
            ).to_bytes()
        self._requests = requests

    def _close_masked_input(self) -> None:
        config = self._config
        survivors = frozenset(self._masked_senders)
        dropped = frozenset(self._sealed) - survivors
        requests = {}
        for recipient in sorted(survivors):
            seed_owners = tuple(sorted(self._graph.holders(recipient) & survivors))
            key_owners = tuple(sorted(self._graph.neighbours(recipient) & dropped))
            request = UnmaskRequest(
                config.round_index, config.instance_nonce, recipient, seed_owners, key_owners
            )
            self._unmask_requests[recipient] = request
            requests[recipient] = request.to_bytes()
        self._requests = requests

    def _rebuild(self, shares: list[Share], owner: int, what: str) -> bytes:
        threshold = self._config.threshold
        if len(shares) < threshold:
            raise RoundAbortedError(
                f"only {len(shares)} shares of client {owner}'s {what}; the threshold is {threshold}"
            )
        # t shares determine the secret; one more (when there is one) checks their consistency.
        # The t + 1 smallest points keep the point set, and so the Lagrange cache, shared.
        used = sorted(shares, key=lambda share: share.x)[: threshold + 1]
        try:
            return reconstruct_secret(used, threshold, _SECRET_LENGTH)
        except (NotEnoughSharesError, InconsistentSharesError) as error:
            raise RoundAbortedError(f"cannot rebuild client {owner}'s {what}: {error}") from error

    def _close_unmask(self) -> None:
        config = self._config
        survivors = frozenset(self._masked_senders)
        dropped = sorted(frozenset(self._sealed) - survivors)
        # Rebuild and check every secret before touching the sum: an abort reveals no partial sum.
        seeds = {
            owner: self._rebuild(self._seed_shares.get(owner, []), owner, "self-mask seed")
            for owner in sorted(survivors)
        }
        keys = {}
        for owner in dropped:
            private = self._rebuild(self._key_shares.get(owner, []), owner, "mask key")
            try:
                pair = AgreementKeyPair.from_private_bytes(private)
            except InvalidKeyError as error:
                raise RoundAbortedError(f"rebuilt mask key of client {owner} is invalid") from error
            if not hmac.compare_digest(pair.public_bytes, self._advertisements[owner].mask_public_key):
                raise RoundAbortedError(
                    f"rebuilt mask key of client {owner} does not match its advertised public key"
                )
            keys[owner] = pair
        total = self._masked_sum
        iid, round_index, bits = self._iid, config.round_index, config.bits
        for owner, seed in seeds.items():
            remove_self_mask(total, seed, bits, iid=iid, round_index=round_index)
        for owner, pair in keys.items():
            for survivor in sorted(self._graph.neighbours(owner) & survivors):
                try:
                    shared = pair.exchange(self._advertisements[survivor].mask_public_key)
                except InvalidKeyError as error:  # excluded at advertisement; kept fail-closed
                    raise RoundAbortedError(f"invalid mask key of client {survivor}") from error
                seed = pairwise_mask_seed(shared, iid, round_index, owner, survivor)
                remove_pairwise_mask(
                    total, seed, bits, dropped=owner, survivor=survivor, iid=iid, round_index=round_index
                )
        if bits < 32:
            np.bitwise_and(total, np.uint32((1 << bits) - 1), out=total)
        total.flags.writeable = False
        self._masked_sum = None
        self._result = AggregateResult(
            sum=total,
            survivors=survivors,
            dropped=MappingProxyType(dict(self._dropped)),
        )
        self._requests = {}
