"""A task whose send broke because the peer worker died reports "worker N died", not its
step failing on the rows it was sending."""

import socket
import threading
from multiprocessing.connection import Connection

from rheostat.backends.hosting import report_failure
from rheostat.backends.links import Link, PeerGone
from rheostat.runtime.task import StepError


def test_a_broken_wire_under_a_step_reads_as_the_peer_dying():
    mine, theirs = socket.socketpair()
    theirs.close()  # the peer worker was killed
    link = Link(Connection(mine.detach()), threading.Event(), peer=1)
    events = []
    try:
        try:
            link.send(1, 7, 0)
        except PeerGone as gone:
            try:  # what Task._call makes of it
                raise StepError("step 'enrich' (task enrich#0) failed in on_batch on a batch "
                                "of 50 rows (first rows: [{\"card\": 4111}])") from gone
            except StepError as err:
                report_failure(events.append, "enrich#0", err)
    finally:
        link.wire.close()
    message = str(events[0].error)
    assert message.startswith("worker 1 died")
    assert "enrich#0" in message and "4111" not in message and "BrokenPipe" not in message
