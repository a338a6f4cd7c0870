"""What a task reports while it takes part in a live reconfiguration: the records live in
the protocol module (:mod:`rheostat.protocol`), shared by every backend.

A task that loses key groups hands their state over (:class:`StateHandoff`); the host
passes it to the controller, which delivers it to the new owner. A task reports
:class:`TaskReconfigured` once its part is done: markers aligned, state handed over,
state it gains installed, function swapped.
"""

from rheostat.protocol import StateHandoff, TaskReconfigured, UpdateChecked

__all__ = ["StateHandoff", "TaskReconfigured", "UpdateChecked"]
