"""Typed engine errors: the kind comes from exception types, errno and HTTP status, never from message text."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
import requests
import requests.exceptions
import urllib3.exceptions

from devbox.engine.errors import call, from_os_error, root_os_error, translate
from devbox.engine.fastapi import Api
from devbox.errors import EngineError, EngineErrorKind
from harness.stub_engine import stub_engine


def _sdk_connection_error(os_error: OSError) -> requests.exceptions.ConnectionError:
    """What the Docker SDK raises for a unix socket that fails: requests wrapping urllib3 wrapping the OSError."""
    protocol = urllib3.exceptions.ProtocolError("Connection aborted.", os_error)
    return requests.exceptions.ConnectionError(protocol)


@pytest.mark.parametrize(("os_error", "kind", "start"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), EngineErrorKind.UNREACHABLE, "no Docker daemon socket at"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), EngineErrorKind.UNREACHABLE, "the Docker daemon at"),
    (PermissionError(errno.EACCES, "Permission denied"), EngineErrorKind.PERMISSION, "permission denied on"),
    (OSError(errno.ETIMEDOUT, "timed out"), EngineErrorKind.TIMEOUT, "the Docker daemon at"),
])
def test_sdk_connection_errors_are_typed_by_errno(os_error: OSError, kind: EngineErrorKind, start: str) -> None:
    err = translate(_sdk_connection_error(os_error), "unix:///run/x.sock")
    assert err.kind is kind
    assert err.message.startswith(start)


def test_the_kind_ignores_what_the_message_says() -> None:
    # a missing socket whose text mentions a permission problem is still a missing socket
    lying = FileNotFoundError(errno.ENOENT, "Permission denied (refused)")
    assert translate(_sdk_connection_error(lying)).kind is EngineErrorKind.UNREACHABLE
    # and a permission error whose text says "No such file" is still a permission error
    assert translate(_sdk_connection_error(PermissionError(errno.EACCES, "No such file or directory"))).kind \
        is EngineErrorKind.PERMISSION


def test_docker_from_env_failure_is_looked_through() -> None:
    # docker.from_env() raises DockerException("Error while fetching server API version: ...") with the cause as context
    try:
        try:
            raise _sdk_connection_error(FileNotFoundError(errno.ENOENT, "x"))
        except requests.exceptions.ConnectionError as inner:
            raise docker.errors.DockerException(f"Error while fetching server API version: {inner}") from None
    except docker.errors.DockerException as exc:
        wrapped = exc
    wrapped.__context__ = _sdk_connection_error(FileNotFoundError(errno.ENOENT, "x"))
    assert root_os_error(wrapped) is not None
    assert translate(wrapped).kind is EngineErrorKind.UNREACHABLE


def _api_error(status: int, message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"message": message}).encode()
    return docker.errors.APIError(message, response=response, explanation=message)


@pytest.mark.parametrize(("status", "kind"), [
    (404, EngineErrorKind.NOT_FOUND), (409, EngineErrorKind.CONFLICT), (400, EngineErrorKind.BAD_REQUEST),
    (500, EngineErrorKind.SERVER), (503, EngineErrorKind.SERVER),
])
def test_sdk_http_errors_are_typed_by_status(status: int, kind: EngineErrorKind) -> None:
    err = translate(_api_error(status, "removal of container abc is already in progress"))
    assert (err.kind, err.status) == (kind, status)
    assert err.message == "Docker engine error: removal of container abc is already in progress"


def test_sdk_timeouts_are_typed() -> None:
    assert translate(requests.exceptions.ReadTimeout("read timed out")).kind is EngineErrorKind.TIMEOUT
    assert from_os_error(TimeoutError()).kind is EngineErrorKind.TIMEOUT


def test_call_translates_and_passes_results_through() -> None:
    assert call(lambda: 42) == 42

    def boom() -> None:
        raise _api_error(404, "no such container: x")

    with pytest.raises(EngineError) as raised:
        call(boom)
    assert raised.value.kind is EngineErrorKind.NOT_FOUND


# --- the stdlib client against a real unix socket ------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    with stub_engine(tmp_path / "engine.sock", {
        "/containers/gone/json": (404, b'{"message": "No such container: gone"}'),
        "/containers/busy/json": (409, b'{"message": "container is busy"}'),
    }) as path:
        yield path


def test_fast_api_statuses_are_typed(server: Path) -> None:
    api = Api(str(server), 5)
    api.ping()
    with pytest.raises(EngineError) as raised:
        api.inspect_container("gone")
    assert (raised.value.kind, raised.value.status, raised.value.message) == (
        EngineErrorKind.NOT_FOUND, 404, "Docker engine error: No such container: gone")
    with pytest.raises(EngineError) as raised:
        api.inspect_container("busy")
    assert raised.value.kind is EngineErrorKind.CONFLICT
    assert api.image_exists("nothing:here") is False
    api.close()


def test_fast_api_on_a_missing_socket_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as raised:
        Api(str(tmp_path / "no.sock"), 2).ping()
    assert raised.value.kind is EngineErrorKind.UNREACHABLE
    assert raised.value.one_line().startswith(f"no Docker daemon socket at {tmp_path / 'no.sock'}")


def test_fast_api_on_a_dead_socket_is_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # bound, never listening: connect() is refused
    try:
        with pytest.raises(EngineError) as raised:
            Api(str(path), 2).ping()
        assert raised.value.kind is EngineErrorKind.UNREACHABLE
        assert "refused the connection" in raised.value.message
    finally:
        s.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged uid to meet a permission error")
def test_fast_api_without_permission_is_permission(server: Path) -> None:
    os.chmod(server, 0o600)
    os.chmod(server.parent, 0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: an ordinary uid, as a user outside the docker group would be
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            Api(str(server), 2).ping()
            os.write(w, b"no error")
        except EngineError as exc:
            os.write(w, exc.kind.value.encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as fh:
        assert fh.read() == b"permission"


# --- a daemon that accepts and never answers ------------------------------------------


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Path]:
    """A socket that accepts every connection and never says a word (a wedged dockerd)."""
    path = tmp_path / "hung.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield path
    stop.set()
    t.join()
    for s in held:
        s.close()
    srv.close()


def test_a_hung_daemon_times_out_naming_the_request(hung: Path) -> None:
    api = Api(str(hung), 1.0)
    started = time.monotonic()
    with pytest.raises(EngineError) as raised:
        api.info()
    assert time.monotonic() - started < 5
    assert raised.value.kind is EngineErrorKind.TIMEOUT
    assert raised.value.message == f"the Docker daemon at unix://{hung} did not answer GET /info within 1 s"


def test_the_sdk_client_times_out_too(hung: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{hung}")
    monkeypatch.setenv("DEVBOX_ENGINE_TIMEOUT", "1")
    from devbox.engine.client import connect

    started = time.monotonic()
    with pytest.raises(EngineError) as raised:
        connect()
    assert time.monotonic() - started < 8
    assert raised.value.kind is EngineErrorKind.TIMEOUT
    assert raised.value.message == f"the Docker daemon at unix://{hung} did not answer GET /_ping within 1 s"


def test_commands_on_a_hung_daemon_end_in_one_line(hung: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "devbox.toml").write_text('name = "p"\n')
    env = {**os.environ, "DOCKER_HOST": f"unix://{hung}", "DEVBOX_ENGINE_TIMEOUT": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "DEVBOX_STATE_DIR": str(tmp_path / "st")}
    r = subprocess.run([sys.executable, "-m", "devbox", "up", "-d"], cwd=project, env=env, capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, f"devbox: error: the Docker daemon at unix://{hung} did not answer GET "
                                           "/_ping within 1 s — it accepts connections but does not reply: check "
                                           "`docker info` and the daemon's log; DEVBOX_ENGINE_TIMEOUT sets how long "
                                           "devbox waits\n")
    r = subprocess.run([sys.executable, "-m", "devbox", "remap", "--json", "--no-probe", "--user", "nobody"],
                       cwd=project, env=env, capture_output=True, text=True, timeout=60)
    live = {f["id"]: f for f in json.loads(r.stdout)["findings"]}["daemon.live"]
    assert live["status"] == "fail"
    assert live["evidence"][0].startswith(f"the Docker daemon at unix://{hung} did not answer GET /_ping within 1 s")


def test_the_stdlib_client_lists_with_the_sdks_filters_and_reads_archives(tmp_path: Path) -> None:
    """The calls a warm `up` makes without the SDK: its filters are the SDK's (``{"label": ["a=b"]}``)."""
    listed = "/containers/json?all=1&filters=%7B%22label%22%3A+%5B%22devbox.project%3Dp%22%5D%7D"
    with stub_engine(tmp_path / "engine.sock", {
        listed: (200, b'[{"Id": "c1"}]'),
        "/volumes?filters=%7B%22label%22%3A+%5B%22devbox.project%3Dp%22%5D%7D": (200, b'{"Volumes": [{"Name": "v"}]}'),
        "/images/devbox%2Feditor%3Aabc/json": (200, b'{"Id": "sha256:1"}'),
        "/containers/c1/archive?path=%2Fetc%2Fpasswd": (200, b"TAR"),
        "/v4.0.0/libpod/pods/json": (200, b"[]"),
    }) as path:
        api = Api(str(path), 5)
        assert api.containers(all=True, filters={"label": "devbox.project=p"}) == [{"Id": "c1"}]
        assert api.volumes(filters={"label": "devbox.project=p"}) == {"Volumes": [{"Name": "v"}]}
        assert api.inspect_image("devbox/editor:abc") == {"Id": "sha256:1"}
        assert api.get_archive("c1", "/etc/passwd") == b"TAR"
        assert api.libpod("GET", "/pods/json") == []
        with pytest.raises(EngineError) as raised:
            api.get_archive("c1", "/nothing")
        assert raised.value.kind is EngineErrorKind.NOT_FOUND


def test_the_stdlib_client_serves_threads_each_on_its_own_connection(server: Path) -> None:
    """The executor starts services from threads: one shared keep-alive connection would mix their answers."""
    api = Api(str(server), 5)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                api.ping()
                with pytest.raises(EngineError) as raised:
                    api.inspect_container("busy")
                assert raised.value.kind is EngineErrorKind.CONFLICT
        except BaseException as exc:  # noqa: BLE001  # collected, asserted below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]  # the stub listens with a backlog of 5
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_the_stdlib_client_reads_an_event_stream_until_the_engine_ends_it(tmp_path: Path) -> None:
    import urllib.parse

    query = urllib.parse.urlencode({"since": "1.5", "until": "9.5", "filters": '{"container": ["c1"]}'})
    stream = b'{"status": "start", "id": "c1"}\n{"status": "health_status: healthy", "id": "c1"}\n'
    with stub_engine(tmp_path / "engine.sock", {f"/events?{query}": (200, stream)}) as path:
        api = Api(str(path), 5)
        events = api.events(since="1.5", until="9.5", filters={"container": ["c1"]})
        api.ping()  # the stream has a connection of its own
        try:
            assert events.next() == {"status": "start", "id": "c1"}
            assert events.next() == {"status": "health_status: healthy", "id": "c1"}
            assert events.next() is None
        finally:
            events.close()
        with pytest.raises(EngineError) as raised:
            api.events(since="0", until="1", filters={})
        assert raised.value.kind is EngineErrorKind.NOT_FOUND
