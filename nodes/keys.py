"""CURVE key files: one pair per node, `NAME.key` (public) and `NAME.key_secret` (its owner
only), in the format of `zmq.auth.create_certificates`; written by `mpsl keys`, checked before
any node starts, read by `nodes.security`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import zmq.auth

from mpsl.topology import Topology

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
SECRET_MODE = 0o600


class KeyFileError(ValueError):
    """A key file that a CURVE topology needs is missing or unreadable (one line)."""


def public_path(keys: str | Path, name: str) -> Path:
    return Path(keys) / f"{name}{PUBLIC_SUFFIX}"


def secret_path(keys: str | Path, name: str) -> Path:
    return Path(keys) / f"{name}{SECRET_SUFFIX}"


def write_keys(out: str | Path, names: Iterable[str]) -> list[tuple[str, Path, Path]]:
    """A new key pair per name in `out` (created if needed): (name, public, secret) each.

    Each pair is made in a private temporary folder (mode 0700) inside `out` and moved in
    place once its secret file is 0600, so the secret is never readable by others.
    Existing files of the same names are replaced.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in dict.fromkeys(names):
        if not name or "/" in name or name.startswith("."):
            raise KeyFileError(f"{name!r}: not a node name usable as a key file name")
        tmp = Path(tempfile.mkdtemp(prefix=".keys-", dir=folder))
        try:
            pub, sec = zmq.auth.create_certificates(tmp, name)
            os.chmod(sec, SECRET_MODE)
            os.chmod(pub, 0o644)
            pub_to, sec_to = public_path(folder, name), secret_path(folder, name)
            os.replace(sec, sec_to)
            os.replace(pub, pub_to)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        written.append((name, pub_to, sec_to))
    return written


def check_key_files(topo: Topology, secrets_for: Iterable[str] | None = None) -> None:
    """Raise KeyFileError naming the first missing key file of a `security: curve` topology.

    Every node's public key is needed (the allow-list and the peers' servers); the secret
    keys of `secrets_for` (default: every node, as for a run on this machine) too. Nothing
    is checked in mode none.
    """
    sec = topo.security
    if sec.mode != "curve" or sec.keys is None:
        return
    names = topo.node_names()
    wanted = [(public_path(sec.keys, n), False) for n in names]
    secrets = names if secrets_for is None else list(secrets_for)
    wanted += [(secret_path(sec.keys, n), True) for n in secrets]
    for path, secret in wanted:
        try:
            if zmq.auth.load_certificate(path)[1] is None and secret:
                raise ValueError("no secret key in it")
        except (OSError, ValueError) as err:
            what = "missing" if not path.exists() else f"unreadable ({err})"
            raise KeyFileError(
                f"{path}: CURVE key file {what}; write the keys with `mpsl keys --topology "
                f"{topo.source} --out {sec.keys}`") from None


def load_pair(keys: str | Path, name: str) -> tuple[bytes, bytes]:
    """`name`'s (public, secret) key, z85-encoded, from its secret file."""
    public, secret = zmq.auth.load_certificate(secret_path(keys, name))
    if secret is None:
        raise KeyFileError(f"{secret_path(keys, name)}: no secret key in it")
    return public, secret


def load_public(keys: str | Path, name: str) -> bytes:
    """`name`'s public key, z85-encoded."""
    return zmq.auth.load_certificate(public_path(keys, name))[0]
