"""rheostat: a vectorised stream-processing engine whose running jobs can be reshaped live.

>>> import rheostat as rs
>>> flow = rs.Flow("example")
"""

from rheostat import sinks, sources, testing
from rheostat.api import agg, windows
from rheostat.api.flow import Flow, KeyedStream, Stream, WindowedStream
from rheostat.api.process import KeyedProcess, ProcessContext, stateful_map
from rheostat.control.controller import JobResult, RestartPolicy
from rheostat.launch import run
from rheostat.plan.errors import FlowError
from rheostat.runtime.errors import JobFailed, UserFunctionError

__all__ = [
    "Flow",
    "FlowError",
    "JobFailed",
    "JobResult",
    "KeyedProcess",
    "KeyedStream",
    "ProcessContext",
    "RestartPolicy",
    "Stream",
    "UserFunctionError",
    "WindowedStream",
    "agg",
    "run",
    "sinks",
    "sources",
    "stateful_map",
    "testing",
    "windows",
]
__version__ = "0.1.0"
