"""A scripted deviating SecAgg+ server for the attack tests.

It runs the honest server (``LocalRound``) up to the point where deviating pays, keeps every
masked vector it received, and then talks to the real clients with requests it crafts itself:
split unmask requests (some holders asked for a victim's seed share, others for its mask-key
share) and split views (different survivor sets for different clients). ``recover_input`` is what
the attacker does with what it gathered: rebuild the victim's self-mask seed and mask key, and
strip every mask from its masked vector.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from secagg.errors import ProtocolError
from secagg.keys import AgreementKeyPair
from secagg.masking import remove_pairwise_mask, remove_self_mask
from secagg.round_keys import pairwise_mask_seed
from secagg.shamir import Share, reconstruct_secret
from secagg.simulate import LocalRound, make_config
from secagg.stages import CONSISTENCY, UNMASK
from secagg.wire import (
    ConsistencyRequest,
    MaskedInputResponse,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)

BITS, LENGTH = 16, 8


class DeviatingServer:
    """A round driven honestly through MASKED_INPUT (everyone answers), then scripted.

    Args:
        n, k, t: clients, graph degree, Shamir threshold.
        consistency_check: build the server and clients with or without the consistency round.
        client_floor: every client's own minimum_survivors (None: the config's, i.e. t).
        share_dropouts: clients that go silent at SHARE_KEYS (everyone else answers everything).
    """

    def __init__(self, n, k, t, *, consistency_check, client_floor=None, round_index=0, seed=7, share_dropouts=()):
        rng = np.random.default_rng(seed)  # test data only
        self.vectors = {i: rng.integers(0, 2**BITS, size=LENGTH, dtype=np.uint32) for i in range(n)}
        config = make_config(range(n), BITS, LENGTH, neighbours_k=k, threshold=t, round_index=round_index)
        self.local = LocalRound(config, self.vectors, consistency_check=consistency_check, client_floor=client_floor)
        self.local.step()  # advertise keys
        self.local.step(skip=share_dropouts)  # share keys
        replies = self.local.collect(skip=share_dropouts)
        self.masked = {c: MaskedInputResponse.from_bytes(data).vector for c, data in replies.items()}
        self.local.deliver(replies)
        self.local.advance()
        self.survivors = tuple(sorted(self.masked))

    @property
    def graph(self):
        return self.local.server.graph

    @property
    def clients(self):
        return self.local.clients

    def split(self, victim):
        """Two disjoint halves of the clients: ``seed_side`` holds the victim and half of its
        neighbours, ``key_side`` the other half; the non-neighbours are dealt out to even the sizes."""
        neighbours = sorted(self.graph.neighbours(victim))
        half = len(neighbours) // 2
        seed_side, key_side = [victim, *neighbours[:half]], neighbours[half:]
        for other in sorted(set(self.survivors) - set(neighbours) - {victim}):
            (seed_side if len(seed_side) < len(key_side) else key_side).append(other)
        return sorted(seed_side), sorted(key_side)

    # --- requests ------------------------------------------------------------------------------

    def sign_everywhere(self):
        """The honest consistency stage: every survivor signs the true survivor set."""
        assert self.local.server.stage == CONSISTENCY
        self.local.step()
        assert self.local.server.stage == UNMASK

    def honest_unmask_request(self, holder) -> UnmaskRequest:
        return decode_message(self.local.server.broadcast()[holder])

    def key_request(self, holder, victim, base=None) -> UnmaskRequest:
        """``base`` (the honest request by default) with the victim moved to the key owners."""
        request = base or self.honest_unmask_request(holder)
        return dataclasses.replace(
            request,
            seed_owners=tuple(sorted(set(request.seed_owners) - {victim})),
            key_owners=tuple(sorted({*request.key_owners, victim})),
        )

    def sign_views(self, views):
        """Split views: client -> the survivor set it is told. Returns client -> signature bytes."""
        config = self.local.config
        signatures = {}
        for client_id, survivors in views.items():
            request = ConsistencyRequest(config.round_index, config.instance_nonce, tuple(sorted(survivors)))
            reply = decode_message(self.clients[client_id].handle(request.to_bytes()))
            signatures[client_id] = reply.signature
        return signatures

    def unmask_request(self, holder, survivors, signatures) -> UnmaskRequest:
        """The unmask request an honest server would send if ``survivors`` were the set."""
        config, graph = self.local.config, self.graph
        dropped = set(self.survivors) - set(survivors)
        return UnmaskRequest(
            config.round_index,
            config.instance_nonce,
            holder,
            tuple(sorted(graph.holders(holder) & set(survivors))),
            tuple(sorted(graph.neighbours(holder) & dropped)),
            tuple(SurvivorSignature(s, signatures[s]) for s in sorted(signatures)),
        )

    # --- the attacker's payoff -------------------------------------------------------------------

    def ask(self, holder, request):
        """Send ``request`` to ``holder``; its UnmaskResponse (a refusal propagates)."""
        return UnmaskResponse.from_bytes(self.clients[holder].handle(request.to_bytes()))

    def gather(self, victim, asks):
        """Ask each (holder, request); the victim's seed and key shares the answers reveal.
        Refusals are counted, not raised: the attacker keeps whatever it gets."""
        seeds, keys, refusals = [], [], []
        for holder, request in asks:
            try:
                reply = self.ask(holder, request)
            except ProtocolError as error:
                refusals.append(error)
                continue
            seeds += [Share.from_bytes(s.share) for s in reply.seed_shares if s.owner == victim]
            keys += [Share.from_bytes(s.share) for s in reply.key_shares if s.owner == victim]
        return seeds, keys, refusals

    def recover_input(self, victim, seed_shares, key_shares):
        """x_victim from its masked vector, given >= t shares of both its secrets (else None)."""
        config, server = self.local.config, self.local.server
        t = config.threshold
        if len(seed_shares) < t or len(key_shares) < t:
            return None
        seed = reconstruct_secret(seed_shares, t, 32)
        mask_pair = AgreementKeyPair.from_private_bytes(reconstruct_secret(key_shares, t, 32))
        iid, round_index = server.instance_id, config.round_index
        vector = self.masked[victim].copy()
        remove_self_mask(vector, seed, BITS, iid=iid, round_index=round_index)
        for peer in sorted(self.graph.neighbours(victim)):
            peer_key = server._advertisements[peer].mask_public_key  # public: relayed to every client
            shared = mask_pair.exchange(peer_key)
            pairwise = pairwise_mask_seed(shared, iid, round_index, victim, peer)
            # Cancel the term the victim itself added for this peer (the victim plays "survivor").
            remove_pairwise_mask(
                vector, pairwise, BITS, dropped=peer, survivor=victim, iid=iid, round_index=round_index
            )
        return vector
