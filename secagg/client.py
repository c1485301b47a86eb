"""The SecAgg+ client state machine: bytes in, bytes out, one object per client and round.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017,
with the neighbour graph of Bell et al., CCS 2020 (docs/ALGORITHMS.md §1.1-1.6). The client answers the
server's four requests in order:

1. AdvertiseKeysRequest -> fresh X25519 key pairs (c_i for masks, e_i for share encryption) and a
   32-byte self-mask seed b_i, all from the OS CSPRNG; the public keys go back signed with the
   client's Ed25519 identity key over the round, nonce and config digest.
2. ShareKeysRequest -> checks its own keys were echoed, no key repeats, enough live holders and
   each neighbour's signature; computes the instance id; Shamir-shares raw b_i and the raw mask
   private key among itself and its live neighbours; seals one share pair per neighbour.
3. MaskedInputRequest -> opens and checks the shares addressed to it; sends the masked input.
4. UnmaskRequest (repeatable, e.g. after a lost reply) -> reveals seed shares of survivors and
   mask-key shares of dropped clients, never both kinds for one client over the whole round.

Any refused message raises a ``ProtocolError`` (``MalformedMessageError`` for bad bytes,
``RoundAbortedError`` when the round cannot complete safely, ``UnsafeRequestError`` for an unmask
request that would unmask someone) and leaves the client's state exactly as it was.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

import numpy as np

from secagg.aead import open_sealed, seal
from secagg.config import RoundConfig, permutation_seed
from secagg.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidKeyError,
    MalformedMessageError,
    ProtocolError,
    RoundAbortedError,
    UnsafeRequestError,
)
from secagg.graph import HararyGraph
from secagg.keys import AgreementKeyPair, IdentityKey, check_identity_keys, verify_signature
from secagg.masking import mask_input
from secagg.round_keys import (
    advertisement_transcript,
    decode_share_plaintext,
    encode_share_plaintext,
    instance_id,
    pairwise_mask_seed,
    share_associated_data,
    share_encryption_key,
)
from secagg.shamir import Share, split_secret
from secagg.stages import ADVERTISE_KEYS, MASKED_INPUT, SHARE_KEYS, UNMASK
from secagg.wire import (
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInputRequest,
    MaskedInputResponse,
    RevealedShare,
    ShareKeysRequest,
    ShareKeysResponse,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)

SELF_MASK_SEED_LENGTH = 32

# The request each stage answers, in protocol order.
_REQUESTS = (
    (ADVERTISE_KEYS, AdvertiseKeysRequest),
    (SHARE_KEYS, ShareKeysRequest),
    (MASKED_INPUT, MaskedInputRequest),
    (UNMASK, UnmaskRequest),
)

__all__ = ["SELF_MASK_SEED_LENGTH", "SecAggClient"]


class SecAggClient:
    """One client's side of one SecAgg+ round.

    Args:
        client_id: this client's id (must be in the round's ``client_ids``).
        identity: this client's Ed25519 identity key (signs its key advertisement).
        identity_keys: the Ed25519 public keys of the other clients, by id, used to verify the
            neighbours' advertisements. They reach a client through the server, so they protect
            nothing unless the caller verified them: ``federation.client_runtime`` uses only a
            directory signed by the enrolment authority it pinned (``federation.authority``).

    Usage: ``handle`` each server message in order and send back the returned bytes; call
    ``set_input`` after the first message (the config, and so m and b, is known from then on)
    and before the masked-input request.
    """

    def __init__(
        self, client_id: int, identity: IdentityKey, identity_keys: Mapping[int, bytes]
    ) -> None:
        if isinstance(client_id, bool) or not isinstance(client_id, int) or not 0 <= client_id < 2**32:
            raise ConfigurationError(f"client_id must be an int in 0..2**32 - 1, got {client_id!r}")
        if not isinstance(identity, IdentityKey):
            raise ConfigurationError(f"identity must be an IdentityKey, got {type(identity).__name__}")
        self._client_id = client_id
        self._identity = identity
        self._identity_keys = check_identity_keys(identity_keys)
        self._next_request = 0  # index into _REQUESTS
        self._config: RoundConfig | None = None
        self._graph: HararyGraph | None = None
        self._mask_pair: AgreementKeyPair | None = None
        self._encryption_pair: AgreementKeyPair | None = None
        self._self_mask_seed: bytes | None = None
        self._input: np.ndarray | None = None
        self._advertisements: dict[int, KeyAdvertisement] = {}  # live neighbours, from ShareKeys
        self._iid: bytes | None = None
        self._held_seed_shares: dict[int, Share] = {}  # owner -> this client's share of b_owner
        self._held_key_shares: dict[int, Share] = {}  # owner -> share of owner's mask key
        self._revealed_seed_owners: set[int] = set()
        self._revealed_key_owners: set[int] = set()

    # --- public state ------------------------------------------------------------------------

    @property
    def client_id(self) -> int:
        return self._client_id

    @property
    def config(self) -> RoundConfig | None:
        """The round's configuration, once the first request has been handled."""
        return self._config

    @property
    def stage(self) -> str | None:
        """The stage whose request is expected next (UNMASK stays current: it may be repeated)."""
        return _REQUESTS[self._next_request][0]

    @property
    def instance_id(self) -> bytes | None:
        """The round's instance id, once the share-keys request has been handled."""
        return self._iid

    @property
    def revealed_seed_owners(self) -> frozenset[int]:
        """Clients whose self-mask-seed share this client has revealed to the server."""
        return frozenset(self._revealed_seed_owners)

    @property
    def revealed_key_owners(self) -> frozenset[int]:
        """Clients whose mask-key share this client has revealed to the server."""
        return frozenset(self._revealed_key_owners)

    def set_input(self, vector: np.ndarray) -> None:
        """Supply x_i, the ``(m,) uint32`` vector with entries < 2**b, to be masked.

        Raises:
            ProtocolError: the configuration is not known yet, or the input was already masked.
            ConfigurationError: wrong type, dtype, shape or range.
        """
        if self._config is None:
            raise ProtocolError("set_input before the round configuration arrived")
        if self._next_request > 2:
            raise ProtocolError("the masked input was already sent; it cannot change")
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32:
            raise ConfigurationError("the input must be a np.uint32 array")
        if vector.shape != (self._config.vector_length,):
            raise ConfigurationError(
                f"the input must have shape ({self._config.vector_length},), got {vector.shape}"
            )
        bits = self._config.bits
        if bits < 32 and vector.size and int(vector.max()) >> bits:
            raise ConfigurationError(f"input entries must be < 2**{bits} (reduce mod 2**bits first)")
        self._input = np.ascontiguousarray(vector).copy()

    # --- dispatch ----------------------------------------------------------------------------

    def handle(self, message: bytes) -> bytes:
        """Process one server message and return this client's reply (wire bytes).

        Raises:
            MalformedMessageError: the bytes do not parse.
            ProtocolError: out of order, for another round/instance/recipient, or failing a check
                (the cause names the failed cryptographic check where there is one).
            RoundAbortedError: too few live neighbours to continue safely.
            UnsafeRequestError: the unmask request would reveal both secrets of one client.
        """
        request = decode_message(message)
        stage, expected = _REQUESTS[self._next_request]
        if not isinstance(request, expected):
            raise ProtocolError(
                f"client {self._client_id}: out of order: expected {expected.__name__} "
                f"({stage}), got {type(request).__name__}"
            )
        if self._config is not None:
            if request.round_index != self._config.round_index:
                raise ProtocolError(
                    f"message for round {request.round_index}; this round is {self._config.round_index}"
                )
            if not hmac.compare_digest(request.instance_nonce, self._config.instance_nonce):
                raise ProtocolError("message for another instance of the round (nonce differs)")
        if isinstance(request, AdvertiseKeysRequest):
            return self._advertise_keys(request)
        if isinstance(request, ShareKeysRequest):
            return self._share_keys(request)
        if isinstance(request, MaskedInputRequest):
            return self._masked_input(request)
        return self._unmask(request)

    # --- stage 1 -----------------------------------------------------------------------------

    def _advertise_keys(self, request: AdvertiseKeysRequest) -> bytes:
        config = request.config
        if self._client_id not in config.client_ids:
            raise ProtocolError(f"client {self._client_id} is not sampled for round {config.round_index}")
        graph = HararyGraph.build(config.client_ids, config.neighbours_k, permutation_seed(config))
        mask_pair = AgreementKeyPair.generate()
        encryption_pair = AgreementKeyPair.generate()
        self_mask_seed = os.urandom(SELF_MASK_SEED_LENGTH)
        signature = self._identity.sign(
            advertisement_transcript(
                config, self._client_id, mask_pair.public_bytes, encryption_pair.public_bytes
            )
        )
        response = AdvertiseKeysResponse(
            config.round_index,
            config.instance_nonce,
            self._client_id,
            mask_pair.public_bytes,
            encryption_pair.public_bytes,
            signature,
        ).to_bytes()
        self._config, self._graph = config, graph
        self._mask_pair, self._encryption_pair = mask_pair, encryption_pair
        self._self_mask_seed = self_mask_seed
        self._next_request = 1
        return response

    # --- stage 2 -----------------------------------------------------------------------------

    def _share_keys(self, request: ShareKeysRequest) -> bytes:
        config, graph = self._config, self._graph
        me = self._client_id
        entries = {entry.client_id: entry for entry in request.advertisements}
        unknown = sorted(set(entries) - set(config.client_ids))
        if unknown:
            raise ProtocolError(f"advertisements from clients not sampled for this round: {unknown[:5]}")
        own = entries.get(me)
        if own is None or not (
            hmac.compare_digest(own.mask_public_key, self._mask_pair.public_bytes)
            and hmac.compare_digest(own.encryption_public_key, self._encryption_pair.public_bytes)
        ):
            raise ProtocolError(f"client {me}: the server did not echo this client's own keys")
        all_keys = [key for e in entries.values() for key in (e.mask_public_key, e.encryption_public_key)]
        if len(set(all_keys)) != len(all_keys):
            raise ProtocolError("a public key repeats among the advertisements")
        neighbours = sorted(graph.neighbours(me) & entries.keys())
        if len(neighbours) + 1 < config.threshold:
            raise RoundAbortedError(
                f"client {me}: {len(neighbours) + 1} live holders of its shares, "
                f"threshold is {config.threshold}"
            )
        for peer in neighbours:
            self._verify_advertisement(entries[peer])
        iid = instance_id(config, request.advertisements)
        holders = [me, *neighbours]
        xs = [graph.abscissa(me, holder) for holder in holders]
        seed_shares = split_secret(self._self_mask_seed, config.threshold, xs)
        key_shares = split_secret(self._mask_pair.private_bytes, config.threshold, xs)
        sealed = []
        for holder, seed_share, key_share in zip(holders[1:], seed_shares[1:], key_shares[1:]):
            shared = self._exchange(self._encryption_pair, entries[holder].encryption_public_key, holder)
            key = share_encryption_key(shared, iid, config.round_index, me, holder)
            plaintext = encode_share_plaintext(me, holder, seed_share.to_bytes(), key_share.to_bytes())
            ciphertext = seal(key, plaintext, share_associated_data(iid, config.round_index, me, holder))
            sealed.append(EncryptedShare(holder, ciphertext))
        response = ShareKeysResponse(
            config.round_index, config.instance_nonce, me, tuple(sealed)
        ).to_bytes()
        self._advertisements = {peer: entries[peer] for peer in neighbours}
        self._iid = iid
        self._held_seed_shares = {me: seed_shares[0]}
        self._held_key_shares = {me: key_shares[0]}
        self._next_request = 2
        return response

    def _verify_advertisement(self, entry: KeyAdvertisement) -> None:
        identity_key = self._identity_keys.get(entry.client_id)
        if identity_key is None:
            raise ProtocolError(f"no enrolled identity key for neighbour {entry.client_id}")
        transcript = advertisement_transcript(
            self._config, entry.client_id, entry.mask_public_key, entry.encryption_public_key
        )
        try:
            verify_signature(identity_key, transcript, entry.signature)
        except AuthenticationError as error:
            raise ProtocolError(
                f"advertisement of client {entry.client_id}: signature does not verify "
                "(forged, swapped keys, or another round/config)"
            ) from error

    @staticmethod
    def _exchange(pair: AgreementKeyPair, peer_public: bytes, peer: int) -> bytes:
        try:
            return pair.exchange(peer_public)
        except InvalidKeyError as error:
            raise ProtocolError(f"client {peer} advertised an invalid X25519 key") from error

    # --- stage 3 -----------------------------------------------------------------------------

    def _masked_input(self, request: MaskedInputRequest) -> bytes:
        config, graph, iid = self._config, self._graph, self._iid
        me, round_index = self._client_id, config.round_index
        if request.recipient != me:
            raise ProtocolError(f"masked-input request addressed to client {request.recipient}, not {me}")
        if self._input is None:
            raise ProtocolError(f"client {me}: no input set before the masked-input request")
        senders = [share.peer for share in request.shares]
        strangers = sorted(set(senders) - self._advertisements.keys())
        if strangers:
            raise ProtocolError(f"shares from clients that are not live neighbours: {strangers[:5]}")
        if len(senders) + 1 < config.threshold:
            raise RoundAbortedError(
                f"client {me}: shares from {len(senders)} neighbours plus its own are below "
                f"the threshold {config.threshold}"
            )
        seed_shares, key_shares, pairwise_seeds = {}, {}, {}
        for encrypted in request.shares:
            source = encrypted.peer
            advertisement = self._advertisements[source]
            shared = self._exchange(self._encryption_pair, advertisement.encryption_public_key, source)
            key = share_encryption_key(shared, iid, round_index, source, me)
            try:
                plaintext = open_sealed(
                    key, encrypted.ciphertext, share_associated_data(iid, round_index, source, me)
                )
            except AuthenticationError as error:
                raise ProtocolError(
                    f"share ciphertext from client {source} fails authentication "
                    "(tampered, or for another pair/round/instance)"
                ) from error
            try:
                source_named, destination_named, seed_bytes, key_bytes = decode_share_plaintext(plaintext)
                seed_share, key_share = Share.from_bytes(seed_bytes), Share.from_bytes(key_bytes)
            except MalformedMessageError as error:
                raise ProtocolError(f"share plaintext from client {source} is malformed: {error}") from error
            if (source_named, destination_named) != (source, me):
                raise ProtocolError(
                    f"share from client {source} names the pair ({source_named}, {destination_named})"
                )
            expected_x = graph.abscissa(source, me)
            if seed_share.x != expected_x or key_share.x != expected_x:
                raise ProtocolError(f"share from client {source} has the wrong evaluation point")
            seed_shares[source], key_shares[source] = seed_share, key_share
            mask_shared = self._exchange(self._mask_pair, advertisement.mask_public_key, source)
            pairwise_seeds[source] = pairwise_mask_seed(mask_shared, iid, round_index, me, source)
        masked = mask_input(
            self._input,
            config.bits,
            client_id=me,
            self_mask_seed=self._self_mask_seed,
            pairwise_seeds=pairwise_seeds,
            iid=iid,
            round_index=round_index,
        )
        masked.flags.writeable = False  # lets the message keep it without a defensive copy
        response = MaskedInputResponse(
            round_index, config.instance_nonce, me, config.bits, masked
        ).to_bytes()
        self._held_seed_shares.update(seed_shares)
        self._held_key_shares.update(key_shares)
        self._input = None  # the plaintext input is no longer needed; do not keep it around
        self._next_request = 3
        return response

    # --- stage 4 -----------------------------------------------------------------------------

    def _unmask(self, request: UnmaskRequest) -> bytes:
        config, me = self._config, self._client_id
        if request.recipient != me:
            raise ProtocolError(f"unmask request addressed to client {request.recipient}, not {me}")
        seed_owners, key_owners = set(request.seed_owners), set(request.key_owners)
        both = seed_owners & key_owners
        if both:
            raise UnsafeRequestError(
                f"client {me} refuses: the request asks for both the seed and the mask-key share "
                f"of clients {sorted(both)[:5]}"
            )
        if me in key_owners:
            raise UnsafeRequestError(
                f"client {me} refuses: it sent its masked input, yet its mask-key share is requested"
            )
        seeds_after_keys = seed_owners & self._revealed_key_owners
        keys_after_seeds = key_owners & self._revealed_seed_owners
        if seeds_after_keys or keys_after_seeds:
            raise UnsafeRequestError(
                f"client {me} refuses: it already revealed the other share of clients "
                f"{sorted(seeds_after_keys | keys_after_seeds)[:5]}"
            )
        if me not in seed_owners:
            raise ProtocolError(f"client {me} is a survivor; its own seed share must be requested")
        unknown = sorted((seed_owners | key_owners) - self._held_seed_shares.keys())
        if unknown:
            raise ProtocolError(f"client {me} holds no shares of clients {unknown[:5]}")
        if len(seed_owners) < config.threshold:
            raise RoundAbortedError(
                f"client {me}: only {len(seed_owners)} surviving holders in its neighbourhood, "
                f"threshold is {config.threshold}"
            )
        response = UnmaskResponse(
            config.round_index,
            config.instance_nonce,
            me,
            tuple(
                RevealedShare(owner, self._held_seed_shares[owner].to_bytes())
                for owner in request.seed_owners
            ),
            tuple(
                RevealedShare(owner, self._held_key_shares[owner].to_bytes())
                for owner in request.key_owners
            ),
        ).to_bytes()
        self._revealed_seed_owners |= seed_owners
        self._revealed_key_owners |= key_owners
        return response
