"""`fedvault unlearn` end to end: a real run, then deletion requests signed from the clients' key
files, with and without verification against retraining."""

import json
import shutil

import pytest
from click.testing import CliRunner

from cli.main import fedvault
from federation.keystore import ClientKeys, load_keys, run_state_tag, save_keys
from federation.run_secrets import run_secret_path, stored_run_history_secret
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
    with Repository.open(str(db)) as repository:  # and client 0's history secret of this run
        tag = run_state_tag(run_id, repository.get_run(run_id).created_at)
    shutil.copy(run_secret_path(keys / "client-0.key", tag), run_secret_path(forged, tag))
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


def test_status_and_cancel_end_a_request_that_a_crash_left_open(trained, monkeypatch):
    import unlearning.deletion as deletion
    from unlearning.deletion import unlearn_client
    from unlearning.requests import sign_deletion_request

    run_id, db, keys = trained
    assert "no deletion requests" in _unlearn(trained, 5, "--status").output
    refused = _unlearn(trained, 5, "--cancel")
    assert refused.exit_code == 2 and "has no open deletion request to cancel" in refused.output
    client = load_keys(keys / "client-5.key")
    with Repository.open(str(db)) as repository, monkeypatch.context() as patch:
        secret = stored_run_history_secret(keys / "client-5.key", client, repository, run_id)
        patch.setattr(deletion, "_unlearn", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):  # the process dies after opening the records
            unlearn_client(repository, sign_deletion_request(client.identity, secret, run_id, 5))
    shown = _unlearn(trained, 5, "--status")
    assert shown.exit_code == 0 and ": opened (method=medu" in shown.output
    other = _unlearn(trained, 5, "--alpha", "0.3")
    assert other.exit_code == 2 and f"--run {run_id} --client 5 --cancel" in other.output
    cancelled = _unlearn(trained, 5, "--cancel", "--reason", "other settings wanted")
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled: it is failed (cancelled: other settings wanted); nothing was applied" in cancelled.output
    (row,) = json.loads(_unlearn(trained, 5, "--status", "--json").output)
    assert (row["state"], row["reason"]) == ("failed", "cancelled: other settings wanted")
    again = _unlearn(trained, 5, "--alpha", "0.3")
    assert again.exit_code == 0 and "shredded" in again.output
    states = [row["state"] for row in json.loads(_unlearn(trained, 5, "--status", "--json").output)]
    assert states == ["failed", "shredded"]


def test_cancel_status_and_verify_exclude_each_other(trained):
    for flags in (("--cancel", "--verify"), ("--status", "--cancel"), ("--status", "--verify")):
        result = _unlearn(trained, 4, *flags)
        assert result.exit_code == 2 and "exclude each other" in result.output


def test_a_verification_that_cannot_train_says_the_deletion_is_finished_and_retries_alone(trained, tmp_path):
    import shutil

    run_id, db, keys = trained
    partial = tmp_path / "keys"
    partial.mkdir()
    for client in range(1, 6):  # client 0's key file is missing: the oracle cannot train it
        for path in [keys / f"client-{client}.key", *keys.glob(f"client-{client}.run-*.history")]:
            shutil.copy2(path, partial / path.name)
    result = _unlearn(trained, 4, "--verify", key_file=partial / "client-4.key")
    assert result.exit_code == 2
    assert "is finished (model version" in result.output and "no key file for client 0" in result.output
    with Repository.open(str(db)) as repository:
        assert repository.get_client(run_id, 4).status == "deleted"
        assert all(e.client_id != 4 for e in repository.audit_entries(run_id, event="unlearning.verified"))
