"""``fedvault demo``: runs end to end at small sizes; --json is valid; bad options fail in one line."""

import json

from click.testing import CliRunner

from cli.main import fedvault


def invoke(*arguments):
    return CliRunner().invoke(fedvault, ["demo", *arguments])


def test_demo_json_reports_exact_sums_bytes_and_timings():
    result = invoke(
        "--clients", "6", "--dimension", "40", "--dropout", "0.34", "--lattice", "D4", "--seed", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["clients"] == 6 and report["dimension"] == 40 and report["lattice"] == "D4"
    checks = report["checks"]
    assert checks["secure_sum_equals_integer_sum_mod_2b"] and checks["lift_equals_integer_sum"]
    assert checks["decode_equals_sum_of_individual_decodes"]
    dropped = report["dropped"]
    gone = len(dropped["advertise_keys"]) + len(dropped["share_keys"]) + len(dropped["masked_input"])
    assert report["survivors"] + gone == 6  # clients dropped at unmask are still in the sum
    assert sum(len(ids) for ids in dropped.values()) == 2  # round(0.34 * 6)
    upload = report["upload"]
    assert upload["masked_input_payload_bytes"] == -(-report["coordinates"] * report["bits"] // 8)
    assert upload["ratio_vs_flower"] == upload["masked_input_payload_bytes"] / (40 * 8)
    assert set(report["timings_seconds"]) >= {"advertise_keys", "share_keys", "masked_input", "unmask"}


def test_demo_table_shows_every_check_passing():
    result = invoke("--clients", "4", "--dimension", "16", "--dropout", "0.25", "--dropout-stage", "masked_input")
    assert result.exit_code == 0, result.output
    assert result.output.count(" OK") == 3 and "FAILED" not in result.output
    assert "masked_input: 1" in result.output and "Flower" in result.output


def test_demo_refuses_too_few_bits_in_one_line_naming_the_knob():
    result = invoke("--clients", "4", "--dimension", "16", "--bits", "2")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("fedvault: error: ") and "--bits" in lines[0]


def test_demo_needs_neighbours_and_threshold_together():
    result = invoke("--clients", "4", "--dimension", "16", "--neighbours", "3")
    assert result.exit_code == 2
    assert "fedvault: error: give both --neighbours and --threshold" in result.output


def test_demo_with_too_many_dropouts_aborts_in_one_line():
    result = invoke(
        "--clients", "4", "--dimension", "16", "--dropout", "0.75", "--neighbours", "3", "--threshold", "3"
    )
    assert result.exit_code == 2
    assert result.output.startswith("fedvault: error: ") and "threshold" in result.output
