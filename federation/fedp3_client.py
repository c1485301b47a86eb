"""A client's part in one LDP-FedP3 round: train the pruned model, one SecAgg+ sum per group.

``ClientRuntime.prepare_fedp3`` and ``ClientRuntime.handle_groups`` delegate here. The client
receives its globally pruned model and a :class:`federation.fedp3_plan.FedP3Offer`; it checks
that the round's one ledger event covers what each of its groups' noise releases, declines if
that would pass its own budget, trains with the pruned entries held at zero, clips its uploaded
groups (``federation.fedp3_training``), and encodes, noises and wraps each group under that
group's plan. Each group then runs its own SecAgg+ client; every stage's requests for all its
groups arrive in one call and are answered in one reply. Its own ledger is charged once, right
before the first of its masked inputs leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from federation.client_ledger import ClientLedger
from federation.client_policy import ClientPolicy, PolicyRefusedError
from federation.client_runtime import ClientRefusedError, TrainReport
from federation.errors import ConfigError
from federation.fedp3_plan import FedP3Offer
from federation.fedp3_training import train_fedp3_client, vector_to_state
from federation.learning import LocalLearner
from federation.round_plan import RoundPlan
from privacy.accounting import rdp_of
from privacy.errors import BudgetExceededError
from privacy.fedp3 import GroupLayout, PrunedModel
from privacy.mechanisms import DistributedNoise
from secagg.client import SecAggClient
from secagg.errors import SecAggError
from secagg.keys import IdentityKey
from secagg.modular import wrap
from secagg.stages import MASKED_INPUT

# The round's event may be computed from a share that differs from a group's in the last bits.
_RDP_SLACK = 1e-9


class FedP3ClientRound:
    """One client's state between ``prepare_fedp3`` and the round's last SecAgg+ stage: one
    SecAgg+ client and one pending masked-input vector per uploaded group."""

    def __init__(self, client_id: int, round_index: int, plans: Mapping[int, bytes], inputs: dict[int, np.ndarray],
                 releases: list[tuple[str, object]], identity: IdentityKey, directory: Mapping[int, bytes],
                 policy: ClientPolicy) -> None:
        self.client_id = client_id
        self.round_index = round_index
        self._plan_bytes = dict(plans)
        self._inputs = inputs
        self._releases = releases
        self._policy = policy
        # The policy's survivor floor is also each group's floor in its consistency round.
        self._secagg = {group: SecAggClient(client_id, identity, directory, minimum_survivors=policy.min_survivors)
                        for group in plans}

    @classmethod
    def prepare(cls, *, client_id: int, learner: LocalLearner, layout: GroupLayout, offer_bytes: bytes,
                start: np.ndarray, keep_masks: Mapping[str, np.ndarray], ledger: ClientLedger,
                noise: Callable[[RoundPlan, np.ndarray], np.ndarray], identity: IdentityKey,
                directory: Mapping[int, bytes], policy: ClientPolicy) -> tuple[FedP3ClientRound, TrainReport]:
        """Check the offer, train from ``start`` ((d,) float32, the pruned global model; zero
        where ``keep_masks``, parameter name -> bool mask of kept entries, prunes), then encode,
        noise and wrap each uploaded group. ``noise(plan, coordinates)`` draws this client's
        integer noise for one group (``ClientRuntime._noise``).

        Raises:
            ClientRefusedError: a malformed offer, plans that do not fit the model, an event
                that does not cover a group's noise, or a round past the client's own budget.
        """
        try:
            offer = FedP3Offer.from_bytes(offer_bytes)
            plans = {group: RoundPlan.from_bytes(data) for group, data in offer.plans.items()}
        except ConfigError as error:
            raise ClientRefusedError(str(error)) from None
        for group, plan in plans.items():
            if not 0 <= group < len(layout.groups) or plan.dimension != layout.groups[group].size:
                raise ClientRefusedError(f"the plan of group {group} does not fit this model's layer groups")
            if plan.round_index != offer.round_index:
                raise ClientRefusedError(f"the plan of group {group} is for round {plan.round_index}")
        releases = _releases(offer, plans, layout)
        try:
            ledger.check(offer.round_index, releases)  # decline before spending any effort
        except BudgetExceededError as error:
            raise ClientRefusedError(str(error)) from None
        uploaded = sorted(plans)
        clip_norm = plans[uploaded[0]].clip_norm
        pruned = PrunedModel(state=vector_to_state(start, learner.trainer.layout), masks=dict(keep_masks),
                             keep_ratio=offer.keep_ratio, dense_groups=frozenset(uploaded))
        result = train_fedp3_client(learner.trainer, pruned, layout, uploaded, learner.data, offer.round_seed,
                                    client_id=client_id, clip_norm=clip_norm, weight=offer.weight,
                                    clipping=offer.clipping)
        inputs = {}
        for group, plan in plans.items():
            coordinates = plan.codec().encode(result.upload.vectors[group], plan.round_seed, client_id)
            coordinates += noise(plan, coordinates)
            inputs[group] = wrap(coordinates, plan.bits)
        training = result.training
        state = cls(client_id, offer.round_index, offer.plans, inputs, releases, identity, directory, policy)
        return state, TrainReport(client_id, training.num_samples, training.loss)

    def handle(self, messages: Mapping[int, bytes], ledger: ClientLedger) -> dict[int, bytes]:
        """Answer one stage's SecAgg+ request of each group (group -> wire bytes), charging the
        round's one event first when the masked inputs are asked for.

        A group whose SecAgg+ client fails (a refused or out-of-order message, too few live
        neighbours) gets no reply: that sum goes on without this client, the others are
        unaffected. A budget refusal or a signed plan that differs from the offer's ends the
        client's round in every group (ClientRefusedError).
        """
        unknown = sorted(set(messages) - set(self._secagg))
        if unknown:
            raise ClientRefusedError(f"client {self.client_id} has no secure sum for groups {unknown} this round")
        if self._releases and any(self._secagg[group].stage == MASKED_INPUT for group in messages):
            try:
                ledger.charge(self.round_index, self._releases)
            except BudgetExceededError as error:
                self._secagg.clear()
                raise ClientRefusedError(str(error)) from None
            self._releases = []
        replies = {}
        for group, message in messages.items():
            client = self._secagg[group]
            first = client.config is None
            try:
                reply = client.handle(message)
            except SecAggError:
                del self._secagg[group]
                continue
            if first:
                # The plan inside the signed round config must be the one this client encoded for.
                if client.config.application_config != self._plan_bytes[group]:
                    self._secagg.clear()
                    raise ClientRefusedError(f"group {group}'s signed plan differs from the plan this client "
                                             "trained for")
                try:  # each group's cohort, threshold and survivor floor, before its advertisement leaves
                    self._policy.check_round(client.config, RoundPlan.from_bytes(self._plan_bytes[group]))
                except PolicyRefusedError:
                    self._secagg.clear()  # one group below the policy ends the client's round in every group
                    raise
                client.set_input(self._inputs.pop(group))
            replies[group] = reply
        return replies


def _releases(offer: FedP3Offer, plans: Mapping[int, RoundPlan], layout: GroupLayout) -> list[tuple[str, object]]:
    """The round's one (ledger stream, event), after checking that the event covers the noise of
    every group this client uploads, as a release over all groups' coordinates
    (``federation.fedp3_privacy``): at every Rényi order, never less than that group's own."""
    shares = [plan.noise for plan in plans.values()]
    if all(share.mode == "none" for share in shares):
        return []
    if offer.event is None or any(share.mode != shares[0].mode for share in shares):
        raise ClientRefusedError("the offer's noise and its ledger event disagree")
    any_plan = next(iter(plans.values()))
    codec = any_plan.codec()
    coordinates = sum(codec.coordinates(group.size) for group in layout.groups)
    charged = rdp_of(offer.event)
    for group, plan in plans.items():
        noise = plan.noise.mechanism_object()
        if isinstance(noise, DistributedNoise):
            noise = replace(noise, dimension=coordinates)
        if np.any(rdp_of(noise.event()) > charged * (1 + _RDP_SLACK)):
            raise ClientRefusedError(f"the round's ledger event charges less than group {group}'s noise releases")
    return [(shares[0].ledger_stream, offer.event)]
