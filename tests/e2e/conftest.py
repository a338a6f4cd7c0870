"""End-to-end fixtures: every flow runs in several modes and must give the same output."""

from dataclasses import dataclass

import pytest

import rheostat as rs


@dataclass(frozen=True)
class Mode:
    backend: str
    parallelism: int

    def run(self, flow: rs.Flow, **kw) -> rs.JobResult:
        return rs.run(flow, backend=self.backend, parallelism=self.parallelism, **kw)


MODES = [Mode("inline", 1), Mode("inline", 3), Mode("local", 2), Mode("ray", 2)]


@pytest.fixture(params=MODES, ids=lambda m: f"{m.backend}-p{m.parallelism}")
def mode(request) -> Mode:
    if request.param.backend == "ray":
        request.getfixturevalue("ray_cluster")
    return request.param
