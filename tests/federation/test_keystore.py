import os
import stat

import pytest

from federation.keystore import KeyFileError, load_keys, load_or_create_keys


def test_key_file_is_private_and_round_trips(tmp_path):
    path = tmp_path / "client-3.key"
    keys = load_or_create_keys(path, 3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_keys(path, 3)
    assert again.identity.public_bytes == keys.identity.public_bytes
    assert again.history_secret == keys.history_secret and len(keys.history_secret) == 32


def test_fresh_clients_get_distinct_secrets(tmp_path):
    first = load_or_create_keys(tmp_path / "a.key", 1)
    second = load_or_create_keys(tmp_path / "b.key", 2)
    assert first.history_secret != second.history_secret
    assert first.identity.public_bytes != second.identity.public_bytes


def test_a_world_readable_key_file_is_refused(tmp_path):
    path = tmp_path / "client-0.key"
    load_or_create_keys(path, 0)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="accessible by other users"):
        load_keys(path)


def test_another_clients_key_file_is_refused(tmp_path):
    path = tmp_path / "client-0.key"
    load_or_create_keys(path, 0)
    with pytest.raises(KeyFileError, match="belongs to client 0, not 1"):
        load_or_create_keys(path, 1)


def test_a_corrupt_key_file_is_refused(tmp_path):
    path = tmp_path / "client-0.key"
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="malformed"):
        load_keys(path)
