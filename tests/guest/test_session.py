import paramiko
import pytest

from harness.guest import session as guest


def test_keys_are_fresh_ed25519_pairs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = guest.make_keys(tmp_path / "a", tmp_path / "a-root")
    second = guest.make_keys(tmp_path / "b", tmp_path / "b-root")
    assert first.host_public.startswith("ssh-ed25519 ") and first.host_public != second.host_public
    assert first.client_private.stat().st_mode & 0o777 == 0o600
    authorized = (tmp_path / "a-root" / guest.AUTHORIZED_KEYS_IN_GUEST).read_text()
    client = paramiko.Ed25519Key.from_private_key_file(str(first.client_private))
    assert authorized.split()[1] == client.get_base64()
    assert (tmp_path / "a-root" / guest.HOST_KEY_IN_GUEST).stat().st_size > 0


def test_only_this_boots_host_key_is_accepted(tmp_path):
    (tmp_path / "k").mkdir()
    keys = guest.make_keys(tmp_path / "k", tmp_path / "root")
    policy = guest._ExpectedHostKey(keys.host_public)
    stranger = paramiko.Ed25519Key.from_private_key_file(str(keys.client_private))
    with pytest.raises(paramiko.SSHException, match="not this boot's key"):
        policy.missing_host_key(None, "127.0.0.1", stranger)
    same = guest._ExpectedHostKey(f"{stranger.get_name()} {stranger.get_base64()}")
    same.missing_host_key(None, "127.0.0.1", stranger)
