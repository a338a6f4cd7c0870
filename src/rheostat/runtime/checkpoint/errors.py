"""The checkpoint store's errors (one module, so the store and the secret share a base)."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """Base class of the checkpoint store's errors."""


class CheckpointWriteError(CheckpointError):
    """Writing a part or a manifest failed (full disk, failing store): abort that checkpoint."""

    def __init__(self, checkpoint_id: int, part: str, detail: str) -> None:
        super().__init__(checkpoint_id, part, detail)
        self.checkpoint_id, self.part, self.detail = checkpoint_id, part, detail

    def __str__(self) -> str:
        return f"checkpoint {self.checkpoint_id}: writing {self.part!r} failed: {self.detail}"


class CorruptCheckpointError(CheckpointError):
    """A checkpoint or savepoint failed verification; ``reason`` says how."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(where, reason)
        self.where, self.reason = where, reason

    def __str__(self) -> str:
        return f"{self.where} is corrupt: {self.reason}"


class UnauthenticatedCheckpointError(CorruptCheckpointError):
    """A manifest whose MAC does not verify with this process's secret, or has none.

    Either the secret differs from the one that wrote the checkpoint, or someone without
    the secret wrote the manifest; ``reason`` says which it looks like and what to do.
    """

    def __str__(self) -> str:
        return f"{self.where} is not authenticated: {self.reason}"


class CheckpointNotFoundError(CheckpointError, LookupError):
    """No complete checkpoint or savepoint by that id or name."""


class CheckpointSecretError(CheckpointError):
    """The checkpoint secret cannot be found, read, created or is too weak."""
