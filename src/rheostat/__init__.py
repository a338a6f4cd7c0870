"""rheostat: a vectorised stream-processing engine whose running jobs can be reshaped live.

>>> import rheostat as rs
>>> flow = rs.Flow("example")
"""

from rheostat import testing
from rheostat.api import agg, windows
from rheostat.api.flow import Flow, KeyedStream, Stream, WindowedStream
from rheostat.control.controller import JobResult
from rheostat.launch import run
from rheostat.plan.errors import FlowError
from rheostat.runtime.errors import JobFailed, UserFunctionError

__all__ = [
    "Flow",
    "FlowError",
    "JobFailed",
    "JobResult",
    "KeyedStream",
    "Stream",
    "UserFunctionError",
    "WindowedStream",
    "agg",
    "run",
    "sinks",
    "sources",
    "testing",
    "windows",
]
__version__ = "0.1.0"
