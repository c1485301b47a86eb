"""The round journal: durable appends, exact read-back, torn tails cut off, private file mode."""

from __future__ import annotations

import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from federation.service.journal import MAGIC, JournalRecord, RoundJournal

RECORDS = [
    JournalRecord("start", {"round_index": 4, "cohort": [1, 2, 3]}, b"\x00config"),
    JournalRecord("report", {"client": 2, "num_samples": 10, "train_loss": None}),
    JournalRecord("message", {"client": 2, "stage": "advertise_keys"}, bytes(range(256)) * 3),
    JournalRecord("close", {"stage": "advertise_keys"}),
]


def write(path, records=RECORDS) -> RoundJournal:
    journal = RoundJournal(path)
    journal.start(records[0])
    for record in records[1:]:
        journal.append(record)
    journal.close()
    return journal


def test_records_read_back_exactly_in_order(tmp_path):
    journal = write(tmp_path / "j.bin")
    assert journal.read() == RECORDS


def test_the_journal_file_is_private(tmp_path):
    write(tmp_path / "j.bin")
    assert stat.S_IMODE((tmp_path / "j.bin").stat().st_mode) == 0o600


def test_starting_a_round_replaces_the_previous_journal(tmp_path):
    journal = write(tmp_path / "j.bin")
    journal.start(JournalRecord("start", {"round_index": 5}))
    assert journal.read() == [JournalRecord("start", {"round_index": 5})]


def test_a_torn_tail_is_cut_off_and_appends_continue_after_the_last_whole_record(tmp_path):
    path = tmp_path / "j.bin"
    write(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # the last append was interrupted
    journal = RoundJournal(path)
    assert journal.read() == RECORDS[:-1]
    journal.append(RECORDS[-1])
    assert journal.read() == RECORDS
    assert path.read_bytes() == whole


def test_a_corrupt_record_ends_the_journal_there(tmp_path):
    path = tmp_path / "j.bin"
    write(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit inside the last record's body
    path.write_bytes(bytes(data))
    assert RoundJournal(path).read() == RECORDS[:-1]


def test_a_file_without_the_magic_holds_nothing_and_is_removed(tmp_path):
    path = tmp_path / "j.bin"
    path.write_bytes(b"FVJ")  # crash while writing the magic
    assert RoundJournal(path).read() == []
    assert not path.exists()


def test_clear_removes_the_journal_and_a_missing_journal_reads_empty(tmp_path):
    journal = write(tmp_path / "j.bin")
    journal.clear()
    assert journal.read() == [] and not (tmp_path / "j.bin").exists()
    journal.clear()  # idempotent


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_truncation_reads_back_a_prefix_of_the_records(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("journal") / "j.bin"
    write(path)
    data = path.read_bytes()
    path.write_bytes(data[:min(cut, len(data))])
    records = RoundJournal(path).read()
    assert records == RECORDS[:len(records)]
    if cut >= len(data):
        assert records == RECORDS
    elif cut < len(MAGIC):
        assert records == []
