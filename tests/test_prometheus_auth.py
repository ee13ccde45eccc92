"""A Prometheus behind auth, without a real one: where the token comes from (flag > file > $PROMETHEUS_TOKEN), the
one-line errors for files that cannot be read, and what is sent to (and said about) a Prometheus refusing it."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chargeback.prometheus import MetricsSourceError, PrometheusAuth, PrometheusDenied, PrometheusSource, Target
from chargeback.pytest_plugin import _checks_command

TOKEN = "sha256~s3cr3t-t0ken"
TARGETS = {"status": "success", "data": {"activeTargets": [
    {"labels": {"job": "limitador", "instance": "gw:8000"}, "health": "up", "scrapeInterval": "1s",
     "scrapeTimeout": "1s", "scrapeUrl": "http://gw:8000/metrics"}]}}


def token_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "token"
    path.write_text(text)
    return str(path)


def test_the_flag_wins_over_the_file_which_wins_over_the_environment(tmp_path: Path) -> None:
    path = token_file(tmp_path, "from-file\n")
    env = {"PROMETHEUS_TOKEN": "from-env"}
    flag = PrometheusAuth.resolve("from-flag", path, environ=env)
    from_file = PrometheusAuth.resolve(None, path, environ=env)
    from_env = PrometheusAuth.resolve(None, None, environ=env)
    assert [(a.token, a.token_from) for a in (flag, from_file, from_env)] == [
        ("from-flag", "--prometheus-token"), ("from-file", f"--prometheus-token-file {path}"),
        ("from-env", "$PROMETHEUS_TOKEN")]
    assert PrometheusAuth.resolve(None, None, environ={"PROMETHEUS_TOKEN": ""}) == PrometheusAuth()


def test_a_token_file_or_ca_that_cannot_be_used_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "token"
    cases = {
        (str(missing), None): f"--prometheus-token-file {missing}: cannot read it (No such file or directory)",
        (str(tmp_path), None): f"--prometheus-token-file {tmp_path}: cannot read it (Is a directory)",
        (token_file(tmp_path, " \n"), None): f"--prometheus-token-file {tmp_path / 'token'}: the file is empty",
        (None, str(tmp_path / "ca.pem")): f"--prometheus-ca {tmp_path / 'ca.pem'}: no such file",
    }
    for (path, ca), message in cases.items():
        with pytest.raises(ValueError) as raised:
            PrometheusAuth.resolve(None, path, ca, environ={})
        assert str(raised.value) == message
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"^--prometheus-token-file \S+/binary: cannot read it \(not UTF-8 text\)$"):
        PrometheusAuth.resolve(None, str(tmp_path / "binary"), environ={})


def test_a_malformed_token_is_refused_without_showing_it(tmp_path: Path) -> None:
    for token, file, env, origin in [(f"Bearer {TOKEN}", None, {}, "--prometheus-token"),
                                     (None, token_file(tmp_path, f"{TOKEN}\n{TOKEN}\n"), {}, None),
                                     (None, None, {"PROMETHEUS_TOKEN": f"{TOKEN}\r\nX-Evil: 1"}, "$PROMETHEUS_TOKEN")]:
        with pytest.raises(ValueError) as raised:
            PrometheusAuth.resolve(token, file, environ=env)
        assert str(raised.value) == (f"{origin or f'--prometheus-token-file {file}'}: the token holds spaces, "
                                     "control or non-ASCII characters (one token expected)")


def test_the_token_is_sent_as_a_bearer_header_and_never_shown(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    auth = PrometheusAuth.resolve(TOKEN, ca=str(ca))
    session = auth.session()
    assert (session.headers["Authorization"], session.verify) == (f"Bearer {TOKEN}", str(ca))
    assert PrometheusAuth(insecure=True).session().verify is False
    assert "Authorization" not in PrometheusAuth().session().headers and PrometheusAuth().session().verify is True
    assert TOKEN not in repr(auth) and TOKEN not in json.dumps(auth.to_record())
    assert auth.to_record() == {"token": "--prometheus-token", "ca": str(ca), "insecure": False}


def test_the_checks_child_gets_the_token_in_its_environment_not_its_command_line(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_TOKEN", raising=False)
    (tmp_path / "ca.pem").write_text("")
    monkeypatch.chdir(tmp_path)  # a relative CA path: the child runs in another folder
    command, env, _ = _checks_command(tmp_path, "--partial", auth=PrometheusAuth(TOKEN, "--prometheus-token", "ca.pem",
                                                                                 True))
    assert command[-4:] == ["--prometheus-ca", str(tmp_path / "ca.pem"), "--insecure", "--partial"]
    assert TOKEN not in " ".join(command) and env["PROMETHEUS_TOKEN"] == TOKEN
    command, env, _ = _checks_command(tmp_path)
    assert "PROMETHEUS_TOKEN" not in env and "--insecure" not in command


class Guarded(BaseHTTPRequestHandler):
    """/api/v1/targets for the right bearer token, 401 without one, 403 with another."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        given = self.headers.get("Authorization")
        status = 200 if given == f"Bearer {TOKEN}" else 401 if given is None else 403
        body = json.dumps(TARGETS).encode() if status == 200 else b"<html>denied</html>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def guarded() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Guarded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_refused_token_is_one_line_naming_the_url_the_status_and_where_the_token_came_from(guarded: str,
                                                                                             tmp_path: Path) -> None:
    path = token_file(tmp_path, "wrong-token\n")
    assert PrometheusSource(guarded, job="limitador", auth=PrometheusAuth.resolve(TOKEN)).targets() == [
        Target("limitador", "gw:8000", 1.0, 1.0)]
    outcomes = {}
    for auth in (PrometheusAuth.resolve(None, path), PrometheusAuth()):
        with pytest.raises(PrometheusDenied) as raised:
            PrometheusSource(guarded, job="limitador", auth=auth).targets()
        outcomes[auth.token_from] = str(raised.value)
    assert outcomes == {
        f"--prometheus-token-file {path}": f"Prometheus at {guarded}: HTTP 403 Forbidden with the token of "
                                           f"--prometheus-token-file {path} (check it)",
        None: f"Prometheus at {guarded}: HTTP 401 Unauthorized without a token (give one with --prometheus-token, "
              "--prometheus-token-file or $PROMETHEUS_TOKEN)"}
    assert isinstance(raised.value, MetricsSourceError)
