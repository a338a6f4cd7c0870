"""Building flows. Nothing here runs a job: see :func:`rheostat.run`."""

from rheostat.api.flow import Flow, KeyedStream, Stream, WindowedStream

__all__ = ["Flow", "KeyedStream", "Stream", "WindowedStream"]
