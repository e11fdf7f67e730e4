"""The station's signing keys over time: the current one, and rotation with an overlap.

Rotation never strands a node:

1. ``rotate(overlap)`` creates a new key but keeps signing with the old one, and
   ``trusted_keys()`` now lists both (the old one with ``not_after`` = end of overlap).
   The station republishes every node's config with that list, signed by the old key,
   which every node still trusts.
2. When the overlap has passed, ``finish_rotation()`` makes the new key the signer and
   ``trusted_keys()`` lists only it; the next config (signed by the new key, which nodes
   learned during the overlap) tells nodes to drop the old one.

A node that stayed offline for the whole overlap must be given the new public key by
hand (``station_keys`` in its config file): choose an overlap longer than outages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import StorageError, ValidationError
from .protocol import SigningKey, TrustedKey, VerifyKey, now_ms

DEFAULT_OVERLAP_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class KeyState:
    signer_kid: str
    next_kid: str | None
    overlap_until: int | None


class Keyring:
    """Keys in ``directory``: ``<kid>.key`` files (0600) and ``keyring.json`` (state)."""

    def __init__(self, directory: Path, *, clock=now_ms):
        self.dir = Path(directory)
        self.clock = clock
        self.state_path = self.dir / "keyring.json"
        self._keys: dict[str, SigningKey] = {}
        if self.state_path.exists():
            self._load()
        else:
            key = SigningKey.generate()
            self._store_key(key)
            self.state = KeyState(key.kid, None, None)
            self._save()

    @classmethod
    def adopt(cls, directory: Path, key_file: Path) -> "Keyring":
        """Start a keyring from an existing single key file (e.g. station.key)."""
        directory = Path(directory)
        if not (directory / "keyring.json").exists():
            key = SigningKey.load(key_file)
            directory.mkdir(parents=True, exist_ok=True)
            ring = cls.__new__(cls)
            ring.dir, ring.clock, ring.state_path, ring._keys = directory, now_ms, directory / "keyring.json", {}
            ring._store_key(key)
            ring.state = KeyState(key.kid, None, None)
            ring._save()
        return cls(directory)

    def _store_key(self, key: SigningKey) -> None:
        key.save(self.dir / f"{key.kid}.key")
        self._keys[key.kid] = key

    def _load(self) -> None:
        try:
            raw = json.loads(self.state_path.read_text("utf-8"))
            self.state = KeyState(raw["signer_kid"], raw.get("next_kid"), raw.get("overlap_until"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.state_path} is damaged: {exc}") from exc
        for kid in filter(None, (self.state.signer_kid, self.state.next_kid)):
            self._keys[kid] = SigningKey.load(self.dir / f"{kid}.key")

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(vars(self.state)), "utf-8")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    @property
    def signer(self) -> SigningKey:
        """The key every message is signed with right now."""
        return self._keys[self.state.signer_kid]

    @property
    def rotating(self) -> bool:
        return self.state.next_kid is not None

    def trusted_keys(self) -> list[TrustedKey]:
        """What nodes must trust now: goes into every node's signed config."""
        out = [TrustedKey(kid=self.signer.kid, public_key=self.signer.public.to_text(),
                          not_after=self.state.overlap_until if self.rotating else None)]
        if self.rotating:
            nxt = self._keys[self.state.next_kid]
            out.append(TrustedKey(kid=nxt.kid, public_key=nxt.public.to_text()))
        return out

    def rotate(self, overlap_ms: int = DEFAULT_OVERLAP_MS) -> SigningKey:
        """Create the next key; the current one keeps signing until finish_rotation()."""
        if self.rotating:
            raise ValidationError(["a rotation is already in progress; finish it first"])
        if overlap_ms < 60_000:
            raise ValidationError(["overlap must be at least one minute"])
        new = SigningKey.generate()
        self._store_key(new)
        self.state = KeyState(self.state.signer_kid, new.kid, self.clock() + overlap_ms)
        self._save()
        return new

    def overlap_over(self) -> bool:
        return self.rotating and self.clock() >= (self.state.overlap_until or 0)

    def finish_rotation(self, *, force: bool = False) -> SigningKey:
        """Switch to the new key (after the overlap, or now with force=True)."""
        if not self.rotating:
            raise ValidationError(["no rotation in progress"])
        if not force and not self.overlap_over():
            raise ValidationError(["the overlap period has not passed yet (use force to switch now)"])
        old = self.state.signer_kid
        self.state = KeyState(self.state.next_kid, None, None)
        self._save()
        (self.dir / f"{old}.key").unlink(missing_ok=True)  # retired: nothing may sign with it again
        self._keys.pop(old, None)
        return self.signer


def trust_from_config(local_keys: list[str], trusted: list[TrustedKey] | None) -> list[VerifyKey]:
    """The keys a node trusts: its local `station_keys` plus what its signed config lists.

    When the config lists keys, it is authoritative (that is how the old key is dropped
    after a rotation); the local keys remain only as the bootstrap before any config.
    """
    if trusted:
        return [VerifyKey.from_text(k.public_key, k.not_after) for k in trusted]
    return [VerifyKey.from_text(k) for k in local_keys]
