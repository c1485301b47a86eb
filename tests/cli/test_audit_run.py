"""`fedvault audit-run`: options and bad input (the real audited runs: tests/federation/test_canary_audit.py)."""

from click.testing import CliRunner

from cli.audit_run import audit_run
from cli.main import fedvault


def test_every_option_has_help_text():
    for parameter in audit_run.params:
        assert parameter.help, parameter.name


def test_the_miscalibration_knob_is_not_an_option():
    result = CliRunner().invoke(fedvault, ["audit-run", "--help"])
    assert result.exit_code == 0
    assert "sensitivity-scale" not in result.output and "--canaries" in result.output


def test_settings_the_audit_cannot_use_fail_in_one_line_before_any_run(tmp_path):
    for settings, reason in ((["--noise", "none"], "claims no ε"), (["--trainer", "dpsgd"], "sgd trainer"),
                             (["--canaries", "1"], "--canaries")):
        result = CliRunner().invoke(fedvault, ["audit-run", *settings, "--db", str(tmp_path / "a.db")])
        assert result.exit_code == 2, result.output
        assert reason in result.output
    assert not (tmp_path / "a.db").exists()  # nothing was created
