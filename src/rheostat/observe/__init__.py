"""Watching jobs: terminal progress while a job runs and a summary when it ends."""

from rheostat.observe.progress import TerminalProgress, summary

__all__ = ["TerminalProgress", "summary"]
