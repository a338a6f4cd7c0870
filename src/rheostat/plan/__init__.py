"""Logical graph, physical plan and key groups: plain data, no execution."""
