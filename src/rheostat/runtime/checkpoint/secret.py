"""The per-deployment secret that authenticates checkpoints (an HMAC-SHA256 key).

Where a store finds it, first match wins (``docs/security.md``, "Checkpoints"):

1. the ``secret=`` argument of :class:`~rheostat.runtime.checkpoint.CheckpointStore`;
2. ``RHEOSTAT_CHECKPOINT_SECRET``: the secret itself;
3. ``RHEOSTAT_CHECKPOINT_SECRET_FILE``: a file holding it (on a cluster, one file on
   storage every node mounts); made on first write if it is missing, in a directory that
   must exist;
4. ``~/.rheostat/checkpoint-secret``, made on first write: 32 random bytes as hex, mode
   0600, in a directory made 0700.

Setting both variables is refused. A secret is its UTF-8 text (a file's contents without
surrounding whitespace) and must be at least 16 bytes. Reading never makes a secret:
verifying a checkpoint needs the one that wrote it.

>>> key = CheckpointKey.of("a doctest secret, long enough", "the doctest")
>>> key
CheckpointKey(key_id='d94e5fb0a9ea5d53', source='the doctest')
>>> CheckpointKey.of("short", "the doctest")
Traceback (most recent call last):
...
rheostat.runtime.checkpoint.errors.CheckpointSecretError: the checkpoint secret ... is 5 bytes; ...
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rheostat.runtime.checkpoint.errors import CheckpointSecretError

log = logging.getLogger(__name__)

ENV_SECRET = "RHEOSTAT_CHECKPOINT_SECRET"
ENV_SECRET_FILE = "RHEOSTAT_CHECKPOINT_SECRET_FILE"
MIN_BYTES = 16
_MAKE_ONE = "python -c 'import secrets; print(secrets.token_hex(32))'"
_KEY_ID_INPUT = b"rheostat checkpoint key id"


@dataclass(frozen=True, repr=False)
class CheckpointKey:
    """A checkpoint secret and where it came from (said in messages; never the secret)."""

    secret: bytes = field(repr=False)
    source: str

    @classmethod
    def of(cls, secret: bytes | str, source: str) -> CheckpointKey:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_BYTES:
            raise CheckpointSecretError(
                f"the checkpoint secret from {source} is {len(raw)} bytes; use at least "
                f"{MIN_BYTES} random bytes, e.g. {_MAKE_ONE}"
            )
        return cls(raw, source)

    @property
    def key_id(self) -> str:
        """A short name of the key, kept in manifests: tells "another secret" apart."""
        return hmac.new(self.secret, _KEY_ID_INPUT, hashlib.sha256).hexdigest()[:16]

    def mac(self, data: bytes) -> str:
        """HMAC-SHA256 of ``data``, lower-case hex."""
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"CheckpointKey(key_id={self.key_id!r}, source={self.source!r})"


def default_secret_path() -> Path:
    """``~/.rheostat/checkpoint-secret``: the secret when no variable names one."""
    return Path.home() / ".rheostat" / "checkpoint-secret"


def resolve_key(
    explicit: bytes | str | None = None,
    *,
    create: bool = False,
    environ: Mapping[str, str] | None = None,
) -> CheckpointKey:
    """The checkpoint key of this process (see the module docstring for the order).

    ``create``: make the secret file when it is missing (writing a checkpoint does;
    reading one does not). Raises :class:`CheckpointSecretError` with what to do.
    """
    if explicit is not None:
        return CheckpointKey.of(explicit, "the secret= argument of CheckpointStore")
    env = os.environ if environ is None else environ
    value, file = env.get(ENV_SECRET) or None, env.get(ENV_SECRET_FILE) or None
    if value is not None and file is not None:
        raise CheckpointSecretError(
            f"both {ENV_SECRET} and {ENV_SECRET_FILE} are set; unset one of them"
        )
    if value is not None:
        return CheckpointKey.of(value.strip(), ENV_SECRET)
    if file is not None:
        path = Path(file).expanduser()
        return _from_file(path, f"{ENV_SECRET_FILE}={path}", create, make_dirs=False)
    path = default_secret_path()
    return _from_file(path, str(path), create, make_dirs=True)


def _from_file(path: Path, source: str, create: bool, *, make_dirs: bool) -> CheckpointKey:
    try:
        return _read(path, source)
    except FileNotFoundError:
        if not create:
            raise CheckpointSecretError(
                f"no checkpoint secret: {path} does not exist and {ENV_SECRET} is not set. "
                "A checkpoint is verified with the secret that wrote it: give this process "
                f"that secret ({ENV_SECRET} or {ENV_SECRET_FILE}, see docs/security.md)"
            ) from None
    try:
        _create(path, make_dirs)
        return _read(path, source)
    except OSError as err:
        raise CheckpointSecretError(
            f"cannot create the checkpoint secret {path}: {err}; set {ENV_SECRET} or "
            f"{ENV_SECRET_FILE} instead (see docs/security.md)"
        ) from None


def _read(path: Path, source: str) -> CheckpointKey:
    """The key in ``path``; FileNotFoundError propagates, other errors are explained."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CheckpointSecretError(f"cannot read the checkpoint secret {path}: {err}") from None
    if mode & 0o077:
        log.warning("the checkpoint secret %s is open to other users (mode %o): chmod 600 it",
                    path, mode & 0o777)
    return CheckpointKey.of(data, source)


def _create(path: Path, make_dirs: bool) -> None:
    """Write a new random secret to ``path`` (0600) unless another process just did."""
    if make_dirs:
        make_private_dirs(str(path.parent))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never over a secret another process made
        except FileExistsError:
            return
        log.warning("made a new checkpoint secret in %s; on a cluster every node needs the "
                    "same one (docs/security.md)", path)
    finally:
        os.unlink(tmp)


def make_private_dirs(directory: str) -> None:
    """Make ``directory`` and its missing parents with mode 0700 (existing ones are kept).

    ``os.makedirs`` gives only the last directory the mode, so each is made here.
    """
    missing = []
    current = os.path.abspath(directory)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
