"""Station key rotation with an overlap: no node is stranded, the old key is retired."""

from __future__ import annotations

import pytest

from devices import errors
from devices import protocol as p
from devices.keyring import Keyring, trust_from_config

HOUR = 3_600_000


class Clock:
    def __init__(self, t: int):
        self.t = t

    def __call__(self) -> int:
        return self.t


def node_verifier(trusted_keys, clock):
    return p.Verifier(trust_from_config([], trusted_keys), clock=clock)


def test_first_start_creates_a_private_key(tmp_path):
    ring = Keyring(tmp_path / "keys")
    assert (tmp_path / "keys" / f"{ring.signer.kid}.key").stat().st_mode & 0o777 == 0o600
    assert Keyring(tmp_path / "keys").signer.kid == ring.signer.kid


def test_adopt_existing_station_key(tmp_path):
    old = p.SigningKey.load_or_create(tmp_path / "station.key")
    ring = Keyring.adopt(tmp_path / "keys", tmp_path / "station.key")
    assert ring.signer.kid == old.kid


def test_rotation_with_overlap_strands_no_node(tmp_path):
    clock = Clock(1_800_000_000_000)
    ring = Keyring(tmp_path / "keys", clock=clock)
    k1 = ring.signer
    node = node_verifier(ring.trusted_keys(), clock)  # a node that knows only k1

    new = ring.rotate(overlap_ms=24 * HOUR)
    assert ring.signer.kid == k1.kid  # still signing with the old key during the overlap
    body = p.ConfigBody(version=2, device_id="loa-01", trusted_keys=ring.trusted_keys())
    config = p.encode_envelope(ring.signer, "config", body, ttl_ms=None, issued_at=clock.t)
    env = node.verify(config)  # the old-key node accepts the announcement
    node = node_verifier(env.body.trusted_keys, clock)  # and now trusts both
    node.verify(p.encode_envelope(new, "ping", {}, issued_at=clock.t))
    node.verify(p.encode_envelope(k1, "ping", {}, issued_at=clock.t))

    with pytest.raises(errors.ValidationError):
        ring.finish_rotation()  # overlap not over
    clock.t += 25 * HOUR
    # after the overlap the old key's messages are refused even by nodes that still list it
    with pytest.raises(errors.UnknownKey):
        node.verify(p.encode_envelope(k1, "ping", {}, issued_at=clock.t))
    assert ring.finish_rotation().kid == new.kid
    assert not (tmp_path / "keys" / f"{k1.kid}.key").exists()
    final = ring.trusted_keys()
    assert [k.kid for k in final] == [new.kid] and final[0].not_after is None
    reloaded = Keyring(tmp_path / "keys", clock=clock)
    assert reloaded.signer.kid == new.kid and not reloaded.rotating


def test_rotation_guards(tmp_path):
    ring = Keyring(tmp_path / "k")
    with pytest.raises(errors.ValidationError):
        ring.finish_rotation()
    with pytest.raises(errors.ValidationError):
        ring.rotate(overlap_ms=10)
    ring.rotate()
    with pytest.raises(errors.ValidationError):
        ring.rotate()
    assert ring.finish_rotation(force=True).kid == ring.signer.kid


def test_damaged_state_is_a_clear_error(tmp_path):
    Keyring(tmp_path / "k")
    (tmp_path / "k" / "keyring.json").write_text("{oops")
    with pytest.raises(errors.StorageError):
        Keyring(tmp_path / "k")


def test_local_keys_bootstrap_until_a_config_lists_keys():
    k = p.SigningKey.generate()
    assert [v.kid for v in trust_from_config([k.public.to_text()], None)] == [k.kid]
    other = p.SigningKey.generate()
    listed = [p.TrustedKey(kid=other.kid, public_key=other.public.to_text())]
    assert [v.kid for v in trust_from_config([k.public.to_text()], listed)] == [other.kid]
