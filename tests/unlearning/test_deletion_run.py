"""End to end through the real coordinator: a run stores its survivors' records, crashes, unlearns a
client, resumes from the unlearned model and never samples that client again; every other
client's history still opens as one unbroken chain."""

import numpy as np
import pytest

import federation.workers
from federation.config import RunConfig
from federation.coordinator import Coordinator
from storage import Repository
from unlearning.deletion import current_model, record_config_for_run, unlearn_client
from unlearning.records import open_history
from unlearning.requests import sign_deletion_request
from federation.keystore import load_keys, run_state_tag
from federation.run_secrets import run_history_secret

pytestmark = pytest.mark.slow

CONFIG = RunConfig(dataset="digits", split="iid", clients=5, rounds=4, model="logreg", noise="none",
                   dropout_rate=0.0, checkpoint_every=1, learning_rate=0.5, workers=1, seed=1)
TARGET = 2


class Crash(Exception):
    pass


def _crash_after(round_index):
    def on_round(summary):
        if summary.round_index == round_index:
            raise Crash()
    return on_round


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    keys = directory / "keys"
    repository = Repository.open(str(directory / "run.db"))
    original_call = federation.workers.WorkerPool.call

    def lose_round_one_confirmations(self, method, arguments):
        if method == "confirm_record" and all(args == (1,) for args in arguments.values()):
            return {}  # the server crashed after committing round 1, before confirming its records
        return original_call(self, method, arguments)

    federation.workers.WorkerPool.call = lose_round_one_confirmations
    try:
        coordinator = Coordinator(CONFIG, repository, key_directory=keys)
        with pytest.raises(Crash):
            coordinator.run(_crash_after(1))
    finally:
        federation.workers.WorkerPool.call = original_call
    run_id = coordinator.run_id
    before = {c: repository.count_sealed_records(run_id, c) for c in range(CONFIG.clients)}
    client_keys = load_keys(keys / f"client-{TARGET}.key")
    secret = run_history_secret(keys / f"client-{TARGET}.key", client_keys, run_id, coordinator.run_tag, create=False)
    outcome = unlearn_client(repository, sign_deletion_request(client_keys.identity, secret, run_id, TARGET))
    unlearned, _ = current_model(repository, run_id)
    Coordinator(CONFIG, repository, key_directory=keys, run_id=run_id).run()
    yield repository, run_id, keys, before, outcome, unlearned
    repository.close()


def test_every_survivor_stored_a_record_of_each_round(story):
    repository, run_id, _, before, _, _ = story
    assert before == {c: 2 for c in range(CONFIG.clients)}  # rounds 0 and 1, no dropouts
    assert repository.get_run(run_id).status == "completed"


def test_the_unlearned_client_is_never_sampled_again_and_its_records_stay_gone(story):
    repository, run_id, _, _, outcome, _ = story
    assert outcome.records_opened == 2 and outcome.records_shredded == 2
    later = [r for r in repository.list_rounds(run_id) if r.round_index >= 2]
    assert [r.round_index for r in later] == [2, 3]
    for info in later:
        assert TARGET not in info.cohort and sorted(info.cohort) == [c for c in range(CONFIG.clients) if c != TARGET]
    assert repository.count_sealed_records(run_id, TARGET) == 0


def test_training_resumed_from_the_unlearned_model(story):
    repository, run_id, _, _, _, unlearned = story
    stepped = unlearned + repository.load_aggregates(run_id, 2)["mean_update"].values
    checkpoint = repository.load_checkpoint(run_id, 2)
    assert checkpoint.info.source == "training"
    assert np.allclose(checkpoint.tensors["flat"], stepped, rtol=2e-3, atol=1e-3)  # fp16 checkpoint


def test_other_clients_histories_open_as_unbroken_chains_across_the_crash(story):
    repository, run_id, keys, _, _, _ = story
    run = repository.get_run(run_id)
    config = record_config_for_run(run.config, repository.list_rounds(run_id))
    for client in (c for c in range(CONFIG.clients) if c != TARGET):
        tag = run_state_tag(run_id, run.created_at)
        secret = run_history_secret(keys / f"client-{client}.key", load_keys(keys / f"client-{client}.key"), run_id,
                                    tag, create=False)
        stored = [(r.round_index, r.ciphertext) for r in repository.iter_sealed_records(run_id, client)]
        opened = list(open_history(stored, history_secret=secret,
                                   commitment=repository.get_client(run_id, client).history_commitment,
                                   run_id=run_id, client_id=client, config=config))
        assert [o.round_index for o in opened] == [0, 1, 2, 3]
        # Round 2 is coded against round 1, whose confirmation the resumed server re-sent.
        assert opened[2].parent_round == 1
