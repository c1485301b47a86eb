import os
import stat

import pytest

from federation.keystore import (
    KeyFileError,
    create_private_file,
    load_keys,
    load_or_create_keys,
    write_private_file,
)


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


@pytest.fixture
def loose_umask():
    previous = os.umask(0o022)  # what most systems run with: new files 0644, folders 0755
    yield
    os.umask(previous)


def _legacy_write(path, payload):
    """The writer as it was before: a predictable temporary name opened without O_EXCL/O_NOFOLLOW."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, payload)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)


def test_a_planted_0644_temporary_file_leaked_the_key_before_and_no_longer_does(tmp_path):
    path = tmp_path / "client-0.key"
    (tmp_path / "client-0.key.tmp").write_bytes(b"")
    os.chmod(tmp_path / "client-0.key.tmp", 0o644)  # planted by another local user
    _legacy_write(path, b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the attack: the key file kept the planted mode
    path.unlink()
    (tmp_path / "client-0.key.tmp").write_bytes(b"")
    os.chmod(tmp_path / "client-0.key.tmp", 0o644)
    write_private_file(path, b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"secret"


def test_a_planted_temporary_symlink_redirected_the_key_before_and_no_longer_does(tmp_path):
    path = tmp_path / "client-0.key"
    stolen = tmp_path / "attacker-file"
    stolen.write_bytes(b"")
    (tmp_path / "client-0.key.tmp").symlink_to(stolen)
    _legacy_write(path, b"secret")
    assert stolen.read_bytes() == b"secret"  # the attack: the secret went through the symlink
    stolen.write_bytes(b"")
    path.unlink()
    (tmp_path / "client-0.key.tmp").symlink_to(stolen)
    write_private_file(path, b"secret")
    assert stolen.read_bytes() == b"" and path.read_bytes() == b"secret" and not path.is_symlink()


def test_a_symlink_at_the_key_path_is_refused_for_reading_creating_and_writing(tmp_path):
    target = tmp_path / "elsewhere.key"
    load_or_create_keys(target, 0)
    path = tmp_path / "client-0.key"
    path.symlink_to(target)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_or_create_keys(path, 0)
    with pytest.raises(KeyFileError, match="symbolic link"):
        write_private_file(path, b"x")
    dangling = tmp_path / "client-1.key"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_or_create_keys(dangling, 1)
    assert not (tmp_path / "missing").exists()


def test_a_new_key_file_and_its_folder_are_private_whatever_the_umask(tmp_path, loose_umask):
    folder = tmp_path / "keys"
    path = folder / "client-2.key"
    load_or_create_keys(path, 2)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_private_file(folder / "ledger.json", b"{}")
    assert stat.S_IMODE((folder / "ledger.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["client-2.key", "ledger.json"]  # no temporary left


def test_create_private_file_never_overwrites(tmp_path):
    path = tmp_path / "secret"
    create_private_file(path, b"one")
    with pytest.raises(KeyFileError, match="already exists"):
        create_private_file(path, b"two")
    assert path.read_bytes() == b"one"
