from click.testing import CliRunner

from cli.main import COMMANDS, fedvault


def test_version_names_the_program():
    result = CliRunner().invoke(fedvault, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("fedvault, version ")


def test_help_lists_every_registered_command():
    result = CliRunner().invoke(fedvault, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_every_registered_command_has_help_text_on_each_option():
    for name in COMMANDS:
        result = CliRunner().invoke(fedvault, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_unknown_command_fails_with_non_zero_exit():
    result = CliRunner().invoke(fedvault, ["no-such-command"])
    assert result.exit_code != 0
    assert "No such command" in result.output
