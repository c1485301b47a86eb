"""`fedvault unlearn` end to end: a real run, then deletion requests signed from the clients' key
files, with and without verification against retraining."""

import json

import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.keystore import ClientKeys, load_keys, save_keys
from storage.repositories import Repository

pytestmark = pytest.mark.slow

RUN_TOML = """
[run]
dataset = "digits"
split = "iid"
clients = 6
rounds = 3
model = "logreg"
noise = "none"
dropout_rate = 0.0
learning_rate = 0.5
workers = 1
seed = 4
extra = { backdoor_client = 1, backdoor_target = 7 }
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli-unlearn")
    (directory / "run.toml").write_text(RUN_TOML)
    db, out = directory / "run.db", directory / "out"
    result = CliRunner().invoke(fedvault, ["run", "--config", str(directory / "run.toml"), "--db", str(db),
                                           "--out", str(out), "--no-plots", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["run_id"], db, out / "keys"


def _unlearn(trained, client, *extra, key_file=None):
    run_id, db, keys = trained
    key_file = key_file or keys / f"client-{client}.key"
    return CliRunner().invoke(fedvault, ["unlearn", "--run", str(run_id), "--client", str(client), "--db", str(db),
                                         "--key-file", str(key_file), *extra])


def test_unlearn_prints_what_it_did_and_repeating_it_reports_the_finished_request(trained):
    run_id, db, keys = trained
    result = _unlearn(trained, 2)
    assert result.exit_code == 0, result.output
    for text in ("authenticated by client 2's enrolled identity key", "opened 3 sealed records",
                 "new model version", "shredded 3 records", "refused from now on"):
        assert text in result.output
    assert not (keys / f"client-2.run-{run_id}.chain").exists()  # the client forgot its reconstruction
    again = _unlearn(trained, 2)
    assert again.exit_code == 0 and "already unlearned by request" in again.output
    with Repository.open(str(db)) as repository:
        assert repository.get_client(run_id, 2).status == "deleted"
        assert repository.count_sealed_records(run_id, 2) == 0


def test_verify_compares_with_retraining_and_audits_the_evidence(trained):
    run_id, db, _ = trained
    result = _unlearn(trained, 1, "--verify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "medu" and report["records_opened"] == 3
    verification = report["verification"]
    for model in ("unlearned", "retrained"):
        assert set(verification[model]) == {"test_accuracy", "forgotten_accuracy", "membership_auc", "backdoor_success"}
        assert 0.0 <= verification[model]["backdoor_success"] <= 1.0  # client 1 planted a trigger
        assert verification[model]["test_accuracy"] > 0.3
    assert verification["relative_distance"] > 0.0
    with Repository.open(str(db)) as repository:
        (entry,) = repository.audit_entries(run_id, event="unlearning.verified")
        assert entry.client_id == 1 and entry.payload["relative_distance"] == verification["relative_distance"]


def test_retrain_method_stores_the_oracle_as_the_new_model(trained):
    result = _unlearn(trained, 3, "--method", "retrain")
    assert result.exit_code == 0, result.output
    assert "retrained 3 rounds without the client" in result.output


def test_a_key_file_of_another_client_is_a_usage_error(trained):
    _, _, keys = trained
    result = _unlearn(trained, 3, key_file=keys / "client-0.key")
    assert result.exit_code == 2 and "holds client 0's keys" in result.output


def test_a_request_signed_with_another_clients_identity_is_refused(trained, tmp_path):
    run_id, db, keys = trained
    thief = load_keys(keys / "client-0.key")
    forged = tmp_path / "client-3.key"
    save_keys(forged, ClientKeys(3, thief.identity, thief.history_secret))
    with Repository.open(str(db)) as repository:
        before = repository.audit_head(run_id)
    result = _unlearn(trained, 3, key_file=forged)
    assert result.exit_code == 2
    assert "not signed by the client's enrolled identity key" in result.output
    with Repository.open(str(db)) as repository:
        assert repository.audit_head(run_id) == before  # nothing was written


def test_healing_is_refused_for_the_retrain_method(trained):
    result = _unlearn(trained, 0, "--method", "retrain", "--heal-rounds", "1")
    assert result.exit_code == 2 and "heal_rounds applies to method 'medu'" in result.output


def test_fast_fedul_settings_with_the_calibrated_rule_are_a_usage_error(trained):
    run_id, db, _ = trained
    with Repository.open(str(db)) as repository:
        before = repository.audit_head(run_id)
    result = _unlearn(trained, 2, "--rule", "calibrated", "--alpha", "0.1")
    assert result.exit_code == 2 and "--alpha and --theta apply to --rule fast-fedul" in result.output
    with Repository.open(str(db)) as repository:
        assert repository.audit_head(run_id) == before  # nothing was written
