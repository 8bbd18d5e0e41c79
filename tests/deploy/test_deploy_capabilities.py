"""The DaemonSet's privileges, proven on this kernel.

1. The agent runs as the DaemonSet runs it: UID 0 with exactly the capabilities its securityContext
   adds (the bounding set, as the container runtime sets it), no_new_privs (allowPrivilegeEscalation:
   false) and a read-only root filesystem, in a network namespace with pods: it captures, judges and
   reads conntrack. Without NET_RAW it refuses to start; without NET_ADMIN it has no conntrack: each
   capability is needed.
2. Why not a non-root user: the kernel gives a non-root process NET_RAW through file capabilities
   or ambient capabilities, but no_new_privs voids file capabilities, and a Kubernetes securityContext
   cannot set ambient ones; so under allowPrivilegeEscalation: false a non-root agent has none.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from tests.rootonly import require_root
from tests.deploy.helpers import DAEMONSET, ROOT, kustomize, one, tool
from tests.test_run import Node, _get, _samples, _wait, cluster_objects, node  # noqa: F401  (fixture)

NOBODY = "65534"
OPEN_PACKET_SOCKET = "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0); print('opened')"


@pytest.fixture(scope="module")
def capabilities() -> list[str]:
    require_root("capability sets and network namespaces")
    (agent,) = one(kustomize(DAEMONSET), "DaemonSet")["spec"]["template"]["spec"]["containers"]
    security = agent["securityContext"]
    assert security["runAsUser"] == 0 and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    return security["capabilities"]["add"]


def _as_container(caps: list[str], *cmd: str) -> list[str]:
    """`cmd` as runc starts a container process with this securityContext: its own mount namespace
    with / read-only, UID 0, bounding set = the added capabilities, no_new_privs."""
    bounding = ",".join(["-all"] + [f"+{c.lower()}" for c in caps])
    return [tool("unshare"), "--mount", "--propagation", "private", "/bin/sh", "-c",
            'mount -o remount,bind,ro / && exec "$@"', "sh",
            tool("setpriv"), "--no-new-privs", "--inh-caps=-all", f"--bounding-set={bounding}", "--", *cmd]


def _agent(node: Node, caps: list[str], cluster: Path, port: int, log: Path) -> subprocess.Popen:
    with log.open("wb") as err:
        return node.start(node.ns, *_as_container(
            caps, sys.executable, "-m", "agent.cli", "run", "--cluster", str(cluster), "--interfaces", "vh*,br0",
            "--listen", f"127.0.0.1:{port}"), stdout=subprocess.PIPE, stderr=err, cwd=str(ROOT))


def _stop(agent: subprocess.Popen) -> list[dict]:
    agent.terminate()
    out, _ = agent.communicate(timeout=10)
    assert agent.returncode == 0
    return [orjson.loads(line) for line in out.splitlines()]


def test_the_shipped_capabilities_are_enough_and_each_one_is_needed(node, tmp_path, capabilities):
    assert sorted(capabilities) == ["NET_ADMIN", "NET_RAW"]
    written = subprocess.run(_as_container(capabilities, "touch", str(tmp_path / "written")), capture_output=True,
                             text=True)
    assert "Read-only file system" in written.stderr and not (tmp_path / "written").exists()  # the sandbox holds
    for pod in ("client", "db"):
        node.add_pod(pod)
    node.start(node.pod_ns("db"), sys.executable, "-m", "http.server", "5432", "--bind", "::",
               "--directory", str(tmp_path))
    _wait(lambda: ":5432 " in node.run(node.pod_ns("db"), "ss", "-ltnH").stdout.decode(), 10, "server")
    cluster = tmp_path / "cluster.json"
    cluster.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objects()}))
    metrics = lambda port: _samples(_get(node, port, "/metrics")[1])

    # As shipped: captures on every interface, judges a flow (denied: data/deny-all), reads conntrack.
    agent = _agent(node, capabilities, cluster, 9847, tmp_path / "all.log")
    _wait(lambda: _get(node, 9847, "/readyz") == (200, "ok\n"), 20, "/readyz")
    m = metrics(9847)
    assert m[("flowwarden_capture_interfaces", ())] == 3 and m[("flowwarden_conntrack_available", ())] == 1
    assert node.run(node.pod_ns("client"), "curl", "-sf", "-o", "/dev/null", "-m", "5", "http://10.77.0.5:5432/",
                    check=False).returncode == 0
    _wait(lambda: metrics(9847).get(("flowwarden_flows_total", (("verdict", "deny"),))) == 1, 10, "the verdict")
    events = _stop(agent)
    assert [(e["kind"], e["established"], e["dst"]["pod"]) for e in events] == [("policy-violation", True, "db")]
    assert "Read-only file system" not in (tmp_path / "all.log").read_text()

    # Without NET_RAW: no AF_PACKET socket, so the agent refuses to start, in one line (exit 2).
    agent = _agent(node, [c for c in capabilities if c != "NET_RAW"], cluster, 9848, tmp_path / "no-raw.log")
    assert agent.wait(timeout=20) == 2
    assert (tmp_path / "no-raw.log").read_text().splitlines()[-1] == (
        "flowwarden: error: capture: opening an AF_PACKET socket: Operation not permitted; "
        "flowwarden run needs root or CAP_NET_RAW")

    # Without NET_ADMIN: capture works, conntrack (netlink dump and event groups) does not.
    agent = _agent(node, [c for c in capabilities if c != "NET_ADMIN"], cluster, 9849, tmp_path / "no-admin.log")
    _wait(lambda: _get(node, 9849, "/readyz") == (200, "ok\n"), 20, "/readyz")
    assert metrics(9849)[("flowwarden_conntrack_available", ())] == 0
    _stop(agent)


@pytest.fixture
def file_capable_python():
    """A copy of a Python interpreter that UID 65534 can run, with NET_RAW as a file capability."""
    directory = Path(tempfile.mkdtemp(prefix="fw-caps-"))
    try:
        directory.chmod(0o755)
        for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3"):
            if not os.path.exists(candidate):
                continue
            copy = directory / "python"
            shutil.copy(candidate, copy)
            copy.chmod(0o755)
            runs = subprocess.run([tool("setpriv"), "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups",
                                   str(copy), "-c", "import socket"], capture_output=True)
            if runs.returncode == 0:
                subprocess.run([tool("setcap"), "cap_net_raw+ep", str(copy)], check=True)
                yield copy
                return
        pytest.fail("no Python interpreter that UID 65534 can run from a copy (Debian's /usr/bin/python3 can)")
    finally:
        shutil.rmtree(directory)


def _non_root(*setpriv: str, program: str) -> subprocess.CompletedProcess:
    """`program` exec'd by a non-root shell that holds no capability (as a container's process does),
    after setpriv set the UID and `setpriv` options."""
    return subprocess.run([tool("setpriv"), "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", *setpriv,
                           "/bin/sh", "-c", 'exec "$0" -c "$1"', program, OPEN_PACKET_SOCKET],
                          capture_output=True, text=True, timeout=30)


def test_a_non_root_agent_would_get_no_capability_under_allow_privilege_escalation_false(file_capable_python):
    plain = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else str(file_capable_python)
    # The kernel does give NET_RAW to a non-root process by a file capability...
    assert _non_root(program=str(file_capable_python)).stdout.strip() == "opened"
    # ...but not under no_new_privs, which allowPrivilegeEscalation: false sets:
    denied = _non_root("--no-new-privs", program=str(file_capable_python))
    assert "PermissionError" in denied.stderr, denied
    # Ambient capabilities survive no_new_privs, but a Kubernetes securityContext cannot set them.
    ambient = _non_root("--no-new-privs", "--inh-caps=+net_raw", "--ambient-caps=+net_raw", program=plain)
    assert ambient.stdout.strip() == "opened", ambient
    # What the DaemonSet does instead: UID 0, no_new_privs, the bounding set NET_RAW (+ NET_ADMIN).
    as_root = subprocess.run([tool("setpriv"), "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all,+net_raw",
                              "/bin/sh", "-c", 'exec "$0" -c "$1"', plain, OPEN_PACKET_SOCKET],
                             capture_output=True, text=True, timeout=30)
    assert as_root.stdout.strip() == "opened", as_root
