"""The checkpoint manifest, format version 2: pure encoding and verification, no I/O.

A manifest names every part of a checkpoint with its file, size and SHA-256. It carries a
checksum (``manifest_sha256``) and an HMAC-SHA256 under the deployment's checkpoint secret
(``manifest_hmac_sha256``), both over the canonical JSON of every other field, the parts'
hashes included: a torn manifest fails the checksum, one written without the secret (a
forgery, or another deployment's) fails the MAC, before any part is trusted. Version 1
manifests had no MAC and are refused. The format is described in
``docs/checkpoint-format.md``.

>>> from rheostat.runtime.checkpoint.secret import CheckpointKey
>>> key = CheckpointKey.of("a doctest secret, long enough", "the doctest")
>>> part = PartInfo.of("map#0/state", b"hello")
>>> part.file
'map_230_2fstate'
>>> m = build_manifest(7, [part], {"flow": "demo"})
>>> decode_manifest(encode_manifest(m, key), key) == m
True
>>> decode_manifest(encode_manifest(m, key).replace(b'"demo"', b'"DEMO"'), key)
Traceback (most recent call last):
...
rheostat.runtime.checkpoint.manifest.ManifestError: manifest checksum mismatch (edited or damaged)
>>> other = CheckpointKey.of("another deployment's secret", "the doctest")
>>> try:
...     decode_manifest(encode_manifest(m, other), key)
... except ManifestAuthError as err:
...     print(err.kind, err)  # doctest: +NORMALIZE_WHITESPACE
other-key the manifest is signed with another secret (key id 4a4912d8f8ae6ff4;
    this process's key id is d94e5fb0a9ea5d53)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rheostat.runtime.checkpoint.secret import CheckpointKey

FORMAT = "rheostat-checkpoint"
VERSION = 2
MANIFEST_NAME = "_MANIFEST.json"
KINDS = ("checkpoint", "savepoint")

_SAFE_CHARS = frozenset(string.ascii_lowercase + string.digits + "-.")
_MAX_FILE_LEN = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that cannot be trusted; the message is the reason."""


class ManifestAuthError(ManifestError):
    """A manifest whose MAC does not verify with the key given, or that has none.

    ``kind``: ``"legacy"`` (format version 1, written before checkpoints had a MAC),
    ``"no-mac"``, ``"other-key"`` (signed with another secret, by its key id) or
    ``"bad-mac"`` (same key id, wrong MAC: written by someone without the secret).
    """

    def __init__(self, kind: Literal["legacy", "no-mac", "other-key", "bad-mac"],
                 message: str) -> None:
        super().__init__(kind, message)
        self.kind, self.message = kind, message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class PartInfo:
    """One part of a checkpoint: its logical name, its file in the directory, its checksum."""

    name: str
    file: str
    size: int
    sha256: str

    @classmethod
    def of(cls, name: str, data: bytes | bytearray | memoryview) -> PartInfo:
        """The entry for ``data`` stored under ``name``."""
        view = memoryview(data).cast("B")
        return cls(name, part_file_name(name), view.nbytes, hashlib.sha256(view).hexdigest())


@dataclass(frozen=True)
class Manifest:
    """A decoded, verified manifest (``parts`` maps part name to entry)."""

    checkpoint_id: int
    kind: str
    created_at: str
    job: dict[str, Any]
    parts: dict[str, PartInfo]
    savepoint: str | None = None
    version: int = VERSION


def part_file_name(name: str) -> str:
    """The file name a part is stored under: injective, safe on any file or object store.

    Lower-case letters, digits, ``-`` and ``.`` (not leading) are kept; every other byte of
    the UTF-8 name becomes ``_xx`` (hex). Upper case is escaped too, so that names differing
    only in case stay apart on case-insensitive disks. Names longer than 200 characters
    once escaped are cut and suffixed with ``_~`` and a hash of the full name.

    >>> part_file_name("Window#3/timers")
    '_57indow_233_2ftimers'
    """
    if not name:
        raise ValueError("a part name must not be empty")
    out: list[str] = []
    for i, ch in enumerate(name):
        if ch in _SAFE_CHARS and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode())
    file = "".join(out)
    if len(file) > _MAX_FILE_LEN:
        file = f"{file[:160]}_~{hashlib.sha256(name.encode()).hexdigest()[:32]}"
    return file


def canonical_json(obj: Any) -> bytes:
    """The bytes the manifest checksum is computed over: sorted keys, no spaces, ASCII."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def build_manifest(
    checkpoint_id: int,
    parts: Iterable[PartInfo],
    job: dict[str, Any],
    *,
    kind: str = "checkpoint",
    savepoint: str | None = None,
    created_at: str | None = None,
) -> Manifest:
    """Check the inputs of a commit and make the manifest (``job`` must be JSON data)."""
    if isinstance(checkpoint_id, bool) or not isinstance(checkpoint_id, int) or checkpoint_id < 0:
        raise ValueError(f"checkpoint id must be an int >= 0, not {checkpoint_id!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    by_name: dict[str, PartInfo] = {}
    for part in parts:
        if part.name in by_name:
            raise ValueError(f"part {part.name!r} is listed twice")
        if part.file != part_file_name(part.name):
            raise ValueError(f"part {part.name!r}: file {part.file!r} is not its file name")
        by_name[part.name] = part
    try:
        job = json.loads(canonical_json(dict(job)))
    except (TypeError, ValueError) as err:
        raise ValueError(f"job metadata must be JSON data: {err}") from None
    created_at = created_at or datetime.now(UTC).isoformat(timespec="milliseconds")
    return Manifest(checkpoint_id, kind, created_at, job, by_name, savepoint)


def _body(m: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": m.version,
        "kind": m.kind,
        "checkpoint_id": m.checkpoint_id,
        "savepoint": m.savepoint,
        "created_at": m.created_at,
        "job": m.job,
        "parts": {
            p.name: {"file": p.file, "size": p.size, "sha256": p.sha256}
            for p in m.parts.values()
        },
    }


def encode_manifest(m: Manifest, key: CheckpointKey) -> bytes:
    """The manifest file: indented JSON for people, its checksum and MAC (under ``key``) last."""
    body = {**_body(m), "key_id": key.key_id}
    canonical = canonical_json(body)
    body["manifest_sha256"] = hashlib.sha256(canonical).hexdigest()
    body["manifest_hmac_sha256"] = key.mac(canonical)
    return (json.dumps(body, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def decode_manifest(data: bytes, key: CheckpointKey) -> Manifest:
    """Parse and verify a manifest file, its MAC under ``key`` before any field is used.

    Raises :class:`ManifestAuthError` for a manifest that is intact (its checksum matches)
    but not authenticated, :class:`ManifestError` for a damaged one.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ManifestError(f"manifest is not valid JSON (torn or damaged): {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError(f"not a {FORMAT} manifest")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"bad format version {version!r}")
    if version > VERSION:
        raise ManifestError(
            f"format version {version} was written by a newer rheostat (this one reads {VERSION})"
        )
    claimed = doc.pop("manifest_sha256", None)
    mac = doc.pop("manifest_hmac_sha256", None)
    try:
        canonical = canonical_json(doc)
    except ValueError as err:
        raise ManifestError(f"manifest holds values JSON cannot carry: {err}") from None
    if claimed != hashlib.sha256(canonical).hexdigest():
        raise ManifestError("manifest checksum mismatch (edited or damaged)")
    _authenticate(doc, canonical, mac, key)
    return _fields(doc)


def _authenticate(doc: dict[str, Any], canonical: bytes, mac: Any, key: CheckpointKey) -> None:
    if doc["version"] == 1:
        raise ManifestAuthError(
            "legacy", "format version 1 was written by a rheostat that did not authenticate "
            "checkpoints (no MAC), so it cannot be told apart from a forgery")
    if not isinstance(mac, str):
        raise ManifestAuthError("no-mac", "the manifest has no MAC (manifest_hmac_sha256)")
    found = doc.get("key_id")
    if found != key.key_id:
        raise ManifestAuthError(
            "other-key", f"the manifest is signed with another secret (key id "
            f"{str(found)[:16]}; this process's key id is {key.key_id})")
    if not hmac.compare_digest(mac, key.mac(canonical)):
        raise ManifestAuthError(
            "bad-mac", "the manifest's MAC does not verify with this process's secret "
            "(its key id matches): it was written or rewritten without the secret")


def _fields(doc: dict[str, Any]) -> Manifest:
    """Type-check the fields of a manifest whose MAC already matched."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ManifestError(f"manifest field {what} is malformed")

    cid, kind, savepoint = doc.get("checkpoint_id"), doc.get("kind"), doc.get("savepoint")
    need(isinstance(cid, int) and not isinstance(cid, bool) and cid >= 0, "checkpoint_id")
    need(kind in KINDS, "kind")
    need(savepoint is None or isinstance(savepoint, str), "savepoint")
    need(isinstance(doc.get("created_at"), str), "created_at")
    need(isinstance(doc.get("job"), dict), "job")
    need(isinstance(doc.get("parts"), dict), "parts")
    parts: dict[str, PartInfo] = {}
    for name, entry in doc["parts"].items():
        need(isinstance(entry, dict), f"parts[{name!r}]")
        file, size, sha = entry.get("file"), entry.get("size"), entry.get("sha256")
        need(name != "" and file == part_file_name(name), f"parts[{name!r}].file")
        need(isinstance(size, int) and not isinstance(size, bool) and size >= 0,
             f"parts[{name!r}].size")
        need(isinstance(sha, str) and _SHA256.fullmatch(sha) is not None,
             f"parts[{name!r}].sha256")
        parts[name] = PartInfo(name, file, size, sha)
    return Manifest(cid, kind, doc["created_at"], doc["job"], parts, savepoint, doc["version"])
