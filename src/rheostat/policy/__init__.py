"""Policies: pure functions of one metrics snapshot that return decisions with reasons.

Nothing here starts a process, reads a clock or does I/O. Each policy is
``decide(snapshot, config, memory) -> Evaluation``: a :class:`Decision` per step ("none"
included, with its reason) and, for a policy that learns, its memory updated.
"""
