"""`thanthien config` and `thanthien keys`: checks and key handling shared by all roles."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .cli import add_command

#: The config schema of each role, as "module:Class", imported only when needed.
ROLE_SCHEMAS = {
    "speaker": "devices.config:SpeakerConfig",
    "fleet": "devices.config:FleetConfig",
    "station": "broadcast.config:StationConfig",
    "kiosk": "kiosk.config:KioskConfig",
}


def schema_for(role: str) -> type:
    module, _, cls = ROLE_SCHEMAS[role].partition(":")
    return getattr(importlib.import_module(module), cls)


def register(sub: argparse._SubParsersAction) -> None:
    cfg = add_command(sub, "config", "check configuration files")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = add_command(cfg_sub, "check", "validate a role's TOML config file and print what it found wrong",
                        epilog="Exit status: 0 valid, 2 invalid.")
    check.add_argument("role", choices=sorted(ROLE_SCHEMAS), help="which role the file configures")
    check.add_argument("file", type=Path, help="the TOML file")
    check.set_defaults(func=_config_check)

    keys = add_command(sub, "keys", "create and inspect the station's Ed25519 signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = add_command(keys_sub, "generate", "create a signing key file (mode 0600) unless it exists")
    gen.add_argument("file", type=Path)
    gen.set_defaults(func=_keys_generate)
    pub = add_command(keys_sub, "public", "print the public key (base64) and key id for node configs")
    pub.add_argument("file", type=Path)
    pub.set_defaults(func=_keys_public)


def _config_check(args: argparse.Namespace) -> int:
    from devices.config import load_config

    load_config(args.file, schema_for(args.role))  # ConfigError -> exit 2 in cli.main
    print(f"{args.file}: valid {args.role} configuration")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from devices.protocol import SigningKey

    existed = args.file.exists()
    key = SigningKey.load_or_create(args.file)
    print(f"{'kept existing' if existed else 'created'} {args.file} (key id {key.kid})")
    print(f"public key: {key.public.to_text()}")
    return 0


def _keys_public(args: argparse.Namespace) -> int:
    from devices.errors import StorageError
    from devices.protocol import SigningKey

    try:
        key = SigningKey.load(args.file)
    except StorageError as exc:
        print(f"thanthien keys: {exc}", file=sys.stderr)
        return 1
    print(key.public.to_text())
    print(f"key id {key.kid}", file=sys.stderr)
    return 0
