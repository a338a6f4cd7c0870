"""A Ray instance rheostat starts keeps its dashboard off (or on 127.0.0.1) and Ray's
token authentication on; joining a cluster passes the user's options through unchanged
(issue 12, finding 7). ``ray.init`` is replaced by a recorder: no Ray starts here."""

import logging
import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray tests need: pip install -e '.[ray]'")

from rheostat.backends.ray import backend as ray_backend
from rheostat.backends.ray.backend import RayBackend, private_ray_token, ray_init_options


def test_a_local_instance_has_no_dashboard_and_any_dashboard_on_loopback():
    options = ray_init_options({}, 3, local=True)
    assert options["include_dashboard"] is False
    assert options["dashboard_host"] == "127.0.0.1"
    assert options["num_cpus"] >= 3
    assert not any("auth" in k.lower() for k in options)  # Ray's default (token) stays


def test_the_users_options_win_and_a_cluster_gets_only_them():
    asked = {"include_dashboard": True, "dashboard_host": "0.0.0.0", "num_cpus": 2}
    assert ray_init_options(asked, 8, local=True) == {"log_to_driver": True, **asked}
    assert ray_init_options({"namespace": "x"}, 8, local=False) == {
        "log_to_driver": True, "namespace": "x"}


@pytest.fixture
def ray_init_calls(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(ray_backend.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_backend.ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setenv("HOME", str(tmp_path))  # its ~/.ray/auth_token, not this user's
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_connect_starts_ray_with_those_options(ray_init_calls, caplog):
    with caplog.at_level(logging.WARNING, "rheostat.ray"):
        RayBackend()._connect(2)
    [kw] = ray_init_calls
    assert kw["address"] is None
    assert kw["include_dashboard"] is False and kw["dashboard_host"] == "127.0.0.1"
    assert "_node_ip_address" not in kw and "RAY_AUTH_MODE" not in str(kw)
    assert not caplog.records
    token = Path(os.environ["HOME"]) / ".ray" / "auth_token"  # made before Ray could
    assert mode(token) == 0o600 and mode(token.parent) == 0o700
    assert len(token.read_text()) == 64


def test_connect_warns_when_token_authentication_is_turned_off(
        ray_init_calls, monkeypatch, caplog):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with caplog.at_level(logging.WARNING, "rheostat.ray"):
        RayBackend()._connect(2)
    assert "RAY_AUTH_MODE=disabled" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "rheostat.ray"):
        RayBackend(address="auto")._connect(2)  # the cluster's choice, not ours
    assert not caplog.records


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_token_file_others_can_read_is_made_private(tmp_path, caplog):
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("t" * 64)
    token.chmod(0o644)  # as Ray 2.60 writes it under umask 022
    with caplog.at_level(logging.WARNING, "rheostat.ray"):
        assert private_ray_token({}, tmp_path) == token
    assert mode(token) == 0o600 and token.read_text() == "t" * 64
    assert "readable by other users" in caplog.text
    assert private_ray_token({"RAY_AUTH_TOKEN": "x"}, tmp_path / "none") is None
    named = tmp_path / "elsewhere"
    assert private_ray_token({"RAY_AUTH_TOKEN_PATH": str(named)}, tmp_path) == named
    assert not named.exists()  # a missing named file is Ray's to report
