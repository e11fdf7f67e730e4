"""The broker's account registry: who may connect, as what, in which groups.

`accounts.json` in the broker directory is the source the password file and the ACL are
generated from, so the two can never disagree. Every change rewrites all three files
atomically and asks Mosquitto to reload them.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import StorageError, ValidationError
from .broker_auth import Account, AccountKind, PasswordFile, atomic_write, new_password, write_acl


@dataclass(frozen=True)
class Enrolment:
    account: Account
    password: str


class BrokerRegistry:
    """Accounts of one ward broker, kept in ``dir``: accounts.json, passwd, acl."""

    def __init__(self, site: str, directory: Path, reload_command: list[str] | None = None):
        self.site = site
        self.dir = Path(directory)
        self.reload_command = reload_command
        self.accounts_path = self.dir / "accounts.json"
        self.passwords = PasswordFile(self.dir / "passwd")
        self.accounts: dict[str, Account] = {}
        if self.accounts_path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.accounts_path.read_text("utf-8"))
            for item in raw["accounts"]:
                acc = Account(item["name"], AccountKind(item["kind"]), list(item.get("groups", [])))
                self.accounts[acc.name] = acc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.accounts_path} is damaged: {exc}") from exc

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"site": self.site, "accounts": [
            {"name": a.name, "kind": a.kind.value, "groups": a.groups}
            for a in sorted(self.accounts.values(), key=lambda a: a.name)]}
        atomic_write(self.accounts_path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        self.passwords.save()
        write_acl(self.dir / "acl", self.site, list(self.accounts.values()))
        self._reload()

    def _reload(self) -> None:
        if not self.reload_command:
            return
        try:
            subprocess.run(self.reload_command, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StorageError(f"broker files written, but reloading the broker failed "
                               f"({' '.join(self.reload_command)}): {exc}") from exc

    def add(self, name: str, kind: AccountKind, groups: list[str] | None = None, *,
            password: str | None = None, replace: bool = False) -> Enrolment:
        """Create an account with a random password (returned once, never stored in clear)."""
        if name in self.accounts and not replace:
            raise ValidationError([f"account {name!r} exists already; use --replace to give it a new password"])
        acc = Account(name, kind, sorted(set(groups or [])))
        secret = password or new_password()
        self.accounts[name] = acc
        self.passwords.set(name, secret)
        self._save()
        return Enrolment(acc, secret)

    def set_groups(self, name: str, groups: list[str]) -> Account:
        acc = self.get(name)
        updated = Account(acc.name, acc.kind, sorted(set(groups)))
        self.accounts[name] = updated
        self._save()
        return updated

    def revoke(self, name: str) -> Account:
        acc = self.get(name)
        del self.accounts[name]
        self.passwords.remove(name)
        self._save()
        return acc

    def get(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise ValidationError([f"no broker account named {name!r}"]) from None

    def render(self) -> None:
        """Rewrite passwd and ACL from the registry (after a manual restore, say)."""
        self._save()
