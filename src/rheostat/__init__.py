"""rheostat: a vectorised stream-processing engine whose running jobs can be reshaped live.

>>> import rheostat as rs
>>> flow = rs.Flow("example")
"""

from rheostat import sinks, sources, testing
from rheostat.api import agg, windows
from rheostat.api.flow import Flow, KeyedStream, Stream, WindowedStream
from rheostat.api.process import KeyedProcess, ProcessContext, stateful_map
from rheostat.backends.base import BackendUnavailable
from rheostat.control.autoscale import Autoscale
from rheostat.control.controller import JobResult, RestartPolicy
from rheostat.control.handle import Job
from rheostat.launch import run, start
from rheostat.plan.errors import FlowError
from rheostat.plan.reconfig import (
    MoveKeyGroups,
    Place,
    ReconfigError,
    Rescale,
    SetKnob,
    UpdateFunction,
)
from rheostat.runtime.errors import JobFailed, UserFunctionError

__all__ = [
    "Autoscale",
    "BackendUnavailable",
    "Flow",
    "FlowError",
    "Job",
    "JobFailed",
    "JobResult",
    "KeyedProcess",
    "KeyedStream",
    "MoveKeyGroups",
    "Place",
    "ProcessContext",
    "ReconfigError",
    "Rescale",
    "RestartPolicy",
    "SetKnob",
    "Stream",
    "UpdateFunction",
    "UserFunctionError",
    "WindowedStream",
    "agg",
    "run",
    "sinks",
    "sources",
    "start",
    "stateful_map",
    "testing",
    "windows",
]
__version__ = "0.1.0"
