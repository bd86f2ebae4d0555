"""The keep-id pod a stack becomes on rootless Podman (devbox.core.pods): pure, no engine."""

from __future__ import annotations

import time

import pytest

from devbox.core.model import LABEL_PROJECT, LABEL_SERVICE, Healthcheck, Mount, Port, Service, Stack
from devbox.core.pods import (
    HOME,
    LABEL_POD,
    LABEL_POD_CONFIG,
    container_spec,
    hosts_file,
    pod_config,
    pod_network,
    pod_ports,
    pod_spec,
    refusal,
    run_as,
    writes_your_files,
)
from devbox.stack.executor import _STEP_RE

WORK = Mount("bind", "/home/me/app", "/work")
EDITOR = Service(name="editor", image="devbox/editor:1", interactive=True, command=("vim", "."), working_dir="/work",
                 mounts=(WORK,))
DB = Service(name="db", image="devbox/postgres:15", mounts=(Mount("volume", "devbox-app-pgdata", "/var/lib/postgresql/data"),),
             healthcheck=Healthcheck(("CMD", "pg_isready"), interval_s=1, timeout_s=5, retries=60))
STACK = Stack(project="app", profile="python", services=(EDITOR, DB))


def test_who_writes_your_files_runs_as_you_and_the_rest_as_their_image_wants() -> None:
    assert writes_your_files(EDITOR) and not writes_your_files(DB)
    assert run_as(EDITOR, 1000, 1001) == "1000:1001"
    assert run_as(DB, 1000, 1001) == "0:0"  # no USER in the image: root, whose entrypoint drops to postgres
    assert run_as(DB, 1000, 1001, image_user="postgres") == "postgres"
    assert run_as(Service(name="x", image="i", user="node", mounts=(WORK,)), 1000, 1000) == "node"  # its own wins
    read_only = Service(name="docs", image="i", mounts=(Mount("bind", "/home/me/app", "/work", read_only=True),))
    assert not writes_your_files(read_only) and run_as(read_only, 1000, 1000) == "0:0"


def test_every_service_is_localhost_in_the_hosts_file() -> None:
    text = hosts_file(STACK)
    assert text.splitlines()[0] == "127.0.0.1\tlocalhost editor db"
    assert "::1\tlocalhost" in text


def test_the_pod_takes_the_best_user_mode_network_that_can_open_tun() -> None:
    assert pod_network(("pasta", "slirp4netns"), True) == "pasta"
    assert pod_network(("slirp4netns",), True) == "slirp4netns"
    assert pod_network(("pasta", "slirp4netns"), False) == "none"  # /dev/net/tun is root's
    assert pod_network((), True) == "none"


def test_the_pod_is_keep_id_and_labelled_apart_from_the_containers() -> None:
    spec = pod_spec(STACK, "devbox-app", "slirp4netns")
    assert spec["userns"] == {"nsmode": "keep-id"} and spec["netns"] == {"nsmode": "slirp4netns"}
    # not devbox.project: the infra container inherits the pod's labels and would be an orphan service
    assert set(spec["labels"]) == {LABEL_POD, LABEL_POD_CONFIG} and spec["labels"][LABEL_POD] == "app"


def test_container_specs_carry_labels_mounts_volumes_health_and_home() -> None:
    ed = container_spec(STACK, EDITOR, "h1", pod="devbox-app", hosts="/state/app.hosts", user="1000:1000")
    assert ed["name"] == "devbox-app-editor" and ed["pod"] == "devbox-app" and ed["image"] == "devbox/editor:1"
    assert ed["labels"][LABEL_PROJECT] == "app" and ed["labels"][LABEL_SERVICE] == "editor"
    assert ed["terminal"] is True and ed["stdin"] is True and ed["init"] is True
    assert ed["command"] == ["vim", "."] and ed["work_dir"] == "/work" and "entrypoint" not in ed
    assert ed["mounts"] == [
        {"destination": "/etc/hosts", "source": "/state/app.hosts", "type": "bind", "options": ["ro"]},
        {"destination": "/work", "source": "/home/me/app", "type": "bind", "options": ["rbind", "rw"]},
    ]
    assert ed["env"]["HOME"] == HOME  # keep-id's passwd entry would make it /work
    db = container_spec(STACK, DB, "h2", pod="devbox-app", hosts="/state/app.hosts", user="0:0")
    assert "HOME" not in db["env"] and db["user"] == "0:0"
    assert db["volumes"] == [{"Name": "devbox-app-pgdata", "Dest": "/var/lib/postgresql/data", "Options": []}]
    assert db["healthconfig"] == {"Test": ["CMD", "pg_isready"], "Interval": 1_000_000_000, "Timeout": 5_000_000_000,
                                  "Retries": 60, "StartPeriod": 0}
    own_home = Service(name="x", image="i", env=(("HOME", "/home/dev"),))
    assert container_spec(STACK, own_home, "h", pod="p", hosts="/h", user="1000:1000")["env"]["HOME"] == "/home/dev"


@pytest.mark.parametrize(("svc", "network", "words"), [
    (Service(name="ide", image="i", ports=(Port(8888, 8888),)), "none", "service ide publishes ports"),
    (Service(name="x", image="i", network_mode="host"), "slirp4netns", 'service x sets network_mode = "host"'),
    (Service(name="x", image="i", pid_mode="host"), "pasta", 'service x sets pid_mode = "host"'),
    (Service(name="web", image="i", ports=(Port(5432, 0),)), "slirp4netns", "services db and web both publish container port 5432"),
])
def test_what_a_pod_cannot_run_is_refused_with_the_service_named(svc: Service, network: str, words: str) -> None:
    db = Service(name="db", image="i", ports=(Port(5432, 0),) if network != "none" else ())
    found = refusal(Stack(project="app", profile="p", services=(EDITOR, db, svc)), network)
    assert found is not None and found[0].startswith(words) and "services." in found[1], found
    assert refusal(STACK, "none") is None
    assert refusal(Stack(project="app", profile="p", services=(EDITOR, db)), network if network != "none" else "pasta") is None


def test_the_pod_publishes_every_port_and_says_what_it_was_made_with() -> None:
    web = Service(name="web", image="i", ports=(Port(8080, 0), Port(9000, 9001, "0.0.0.0", "udp")))
    stack = Stack(project="app", profile="p", services=(EDITOR, web))
    spec = pod_spec(stack, "devbox-app", "pasta")
    assert spec["portmappings"] == [
        {"host_ip": "127.0.0.1", "host_port": 0, "container_port": 8080, "protocol": "tcp"},  # 0: Podman picks
        {"host_ip": "0.0.0.0", "host_port": 9001, "container_port": 9000, "protocol": "udp"},
    ]
    assert spec["labels"][LABEL_POD_CONFIG] == pod_config("pasta", pod_ports(stack))
    # the label changes with the ports or the network (then the pod is made again), not otherwise
    assert pod_config("pasta", pod_ports(stack)) == pod_config("pasta", pod_ports(Stack("app", "q", (web, EDITOR))))
    assert pod_config("pasta", pod_ports(stack)) != pod_config("slirp4netns", pod_ports(stack))
    assert pod_config("pasta", pod_ports(stack)) != pod_config("pasta", pod_ports(STACK))
    assert "portmappings" not in pod_spec(STACK, "devbox-app")


def test_volumes_of_services_that_run_as_you_are_chowned_to_you() -> None:
    ide = Service(name="ide", image="i", mounts=(WORK, Mount("volume", "devbox-app-code-server", "/root/.local/share/code-server")))
    spec = container_spec(STACK, ide, "h", pod="p", hosts="/h", user="1000:1000")
    assert spec["volumes"] == [{"Name": "devbox-app-code-server", "Dest": "/root/.local/share/code-server", "Options": ["U"]}]
    assert container_spec(STACK, DB, "h", pod="p", hosts="/h", user="0:0")["volumes"][0]["Options"] == []


def test_a_slow_first_start_is_said_while_it_happens(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from devbox.stack import pods

    class Api:
        def start(self, cid: str) -> None:
            time.sleep(0.3)

    class Client:
        api = Api()

    monkeypatch.setattr(pods, "SLOW_START_S", 0.05)
    seconds = pods.start(Client(), EDITOR, "c1")  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert seconds >= 0.3
    assert "service editor: starting; Podman prepares devbox/editor:1 for keep-id on its first start" in err
    assert "service editor: started in 0." in err
    monkeypatch.setattr(pods, "SLOW_START_S", 5)
    pods.start(Client(), EDITOR, "c1")  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""  # a quick start says nothing


def test_build_steps_are_read_from_docker_and_from_podman() -> None:
    for line, want in (("Step 3/8 : RUN apt-get update", ("3", "8", "RUN apt-get update")),
                       ("STEP 3/8: RUN apt-get update", ("3", "8", "RUN apt-get update"))):
        m = _STEP_RE.match(line)
        assert m is not None and m.groups() == want


def test_on_rootful_podman_the_pod_has_no_keep_id_and_writers_bind_through_an_idmap() -> None:
    # rootful Podman (strategy idmap): the host's user namespace, Podman's bridge, crun's idmapped binds
    from devbox.core.views import View, ViewPlan, podman_idmap
    from devbox.stack.pods import Pod
    from devbox.stack.views import Views

    assert pod_network(("pasta",), False, rootful=True) == "bridge"
    spec = pod_spec(STACK, "devbox-app", "bridge", keep_id=False)
    assert "userns" not in spec and spec["netns"] == {"nsmode": "bridge"}

    # you on disk (1000:1001) = the writer, container root (host 0:0): S-W-1 lines, as a view's
    assert podman_idmap((1000, 1001), (0, 0)) == "idmap=uids=1000-0-1;gids=1001-0-1"
    view = View("app", "editor", "/home/me/app", "/work", (1000, 1001), (0, 0), (0, 0))
    views = Views("idmap", ViewPlan((view,)), STACK, engine_made=True)
    pod = Pod(hosts=__import__("pathlib").Path("/h"), uid=1000, gid=1001, network="bridge", keep_id=False,
              idmaps=views.podman_idmaps())
    assert pod.user_of(EDITOR) == ""  # the image's own user: no keep-id to make it you
    assert pod.user_of(Service(name="x", image="i", user="node", mounts=(WORK,))) == "node"
    editor = container_spec(STACK, EDITOR, "h1", pod="devbox-app", hosts="/h", user=pod.user_of(EDITOR), keep_id=False,
                            idmaps=pod.idmaps_of(EDITOR))
    assert "user" not in editor and "HOME" not in editor["env"]
    assert {"destination": "/work", "source": "/home/me/app", "type": "bind",
            "options": ["rbind", "rw", "idmap=uids=1000-0-1;gids=1001-0-1"]} in editor["mounts"]
    db = container_spec(STACK, DB, "h2", pod="devbox-app", hosts="/h", user="", keep_id=False, idmaps=pod.idmaps_of(DB))
    assert db["volumes"] == [{"Name": "devbox-app-pgdata", "Dest": "/var/lib/postgresql/data", "Options": []}]  # no :U
    assert [m["options"] for m in db["mounts"]] == [["ro"]]  # the hosts file only
