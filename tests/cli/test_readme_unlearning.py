"""The README's unlearning example, exactly as written there: `fedvault run` on its defaults
(distributed DP noise, 50 clients, dropouts), then `fedvault unlearn --run 1 --client 3 --verify`,
both exit 0 in a fresh folder."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import fedvault
from storage.repositories import Repository

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_unlearning_commands() -> list[list[str]]:
    """The `fedvault` command lines of the code block in README's "Unlearning a client" section."""
    section = README.read_text().split("## Unlearning a client", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        assert words[0] == ".venv/bin/fedvault", line
        commands.append(words[1:])
    return commands


def test_the_readme_block_is_a_run_then_a_verified_unlearning():
    (run, unlearn) = readme_unlearning_commands()
    assert run == ["run"] and unlearn == ["unlearn", "--run", "1", "--client", "3", "--verify"]


@pytest.mark.slow
def test_the_readme_unlearning_example_exits_zero_on_a_fresh_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # fedvault-out/ and the database land here, as on a fresh checkout
    outputs = []
    for command in readme_unlearning_commands():
        result = CliRunner().invoke(fedvault, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "verification against retraining" in outputs[-1]
    with Repository.open(str(tmp_path / "fedvault.db")) as repository:
        assert repository.get_client(1, 3).status == "deleted"
        assert [r.state for r in repository.list_deletion_requests(1, 3)] == ["shredded"]
        assert len(repository.audit_entries(1, event="unlearning.verified")) == 1
        assert repository.verify_ledger(1).ok and repository.verify_audit_log(1).ok
