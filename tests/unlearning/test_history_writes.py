"""End to end through the real coordinator and its worker processes: each client writes its chain
file once per round it records (never for a confirmation), and with dropouts, where some uploaded
records are never stored, every client's stored history still opens as one unbroken chain."""

import pytest

from federation.config import RunConfig
from federation.coordinator import Coordinator
from federation.keystore import load_keys
from federation.run_secrets import stored_run_history_secret
from storage import Repository
from unlearning.chain_file import ChainFile, chain_path
from unlearning.deletion import record_config_for_run
from unlearning.records import open_history

pytestmark = pytest.mark.slow

CONFIG = RunConfig(dataset="digits", split="iid", clients=5, rounds=5, model="logreg", noise="none",
                   dropout_rate=0.25, checkpoint_every=5, learning_rate=0.5, workers=1, seed=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    keys = directory / "keys"
    repository = Repository.open(str(directory / "run.db"))
    coordinator = Coordinator(CONFIG, repository, key_directory=keys)
    coordinator.run()
    yield repository, coordinator, keys
    repository.close()


def test_one_chain_file_write_per_recorded_round(run):
    repository, coordinator, keys = run
    rounds = repository.list_rounds(coordinator.run_id)
    dimension = coordinator.dimension
    for client in range(CONFIG.clients):
        # Every cohort member trains, seals and writes before the dropouts are drawn.
        recorded = sum(client in info.cohort for info in rounds)
        written = ChainFile(chain_path(keys / f"client-{client}.key", coordinator.run_tag), dimension).sequence
        assert written == recorded, f"client {client}: {written} chain-file writes for {recorded} recorded rounds"


def test_histories_open_as_chains_although_some_uploads_were_never_stored(run):
    repository, coordinator, keys = run
    run_id = coordinator.run_id
    rounds = repository.list_rounds(run_id)
    config = record_config_for_run(repository.get_run(run_id).config, rounds)
    lost_then_stored = 0
    for client in range(CONFIG.clients):
        key_file = keys / f"client-{client}.key"
        secret = stored_run_history_secret(key_file, load_keys(key_file), repository, run_id)
        stored = [(r.round_index, r.ciphertext) for r in repository.iter_sealed_records(run_id, client)]
        opened = list(open_history(stored, history_secret=secret,
                                   commitment=repository.get_client(run_id, client).history_commitment,
                                   run_id=run_id, client_id=client, config=config))
        stored_rounds = [o.round_index for o in opened]
        assert stored_rounds == [info.round_index for info in rounds if client in info.survivors]
        for previous, record in zip(opened, opened[1:]):
            uploaded_between = [info.round_index for info in rounds
                                if previous.round_index < info.round_index < record.round_index
                                and client in info.cohort]
            if uploaded_between:  # an upload the server did not store: the next record is a key frame
                lost_then_stored += 1
                assert record.parent_round is None
            elif record.parent_round is not None:
                assert record.parent_round == previous.round_index
        assert any(o.parent_round is not None for o in opened[1:]) or len(opened) < 2
    assert lost_then_stored >= 1  # the seed's dropouts exercise a lost upload followed by a stored record
