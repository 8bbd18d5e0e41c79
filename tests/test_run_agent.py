"""The node agent in-process, without starting its threads: health, reload, sweeps, grace.

An `Agent` is built as `flowwarden run` builds it (config file, `--cluster` file or
the loopback API server of tests/kubeapi, HTTP server on a free loopback port) and
driven through its methods; the fixture closes what it opened.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from agent.config import Config, load_config
from agent.judges import JUDGES
from agent.run import Agent, RunOptions, effective_grace
from tests.rootonly import require_root
from tests.kubeapi import kubeapi, kubeconfig  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "pcaps" / "http-allowed-and-denied" / "cluster.json"
NO_CONNTRACK = "capture:\n  conntrack: false\n"


@pytest.fixture
def make_agent(tmp_path):
    """make_agent(config_text, **RunOptions) -> an Agent on a `--cluster` file unless told otherwise."""
    require_root("the agent, which checks at start that it may capture")
    agents: list[Agent] = []

    def make(config_text: str = NO_CONNTRACK, **options) -> Agent:
        config = tmp_path / f"flowwarden-{len(agents)}.yaml"
        config.write_text(config_text)
        options = {"cluster": str(CLUSTER), **options} if "kubeconfig" not in options else options
        agent = Agent(RunOptions(config=str(config), interfaces="lo", listen="127.0.0.1:0",
                                 events=str(tmp_path / f"events-{len(agents)}.jsonl"), **options))
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.server.server_close()
        if agent.ct_reader is not None:
            agent.ct_reader.stop()
        agent._events_file.close()


@pytest.fixture
def judge_factory():
    """Registers judge factories under test names (the registry is how judges are added)."""
    names: list[str] = []

    def register(name: str, factory) -> str:
        JUDGES[name] = factory
        names.append(name)
        return name

    yield register
    for name in names:
        JUDGES.pop(name, None)


# --- /healthz ---------------------------------------------------------------------------

def test_healthz_fails_when_the_interface_listing_has_not_succeeded_for_a_while(make_agent):
    agent = make_agent()
    assert agent.healthy() == (True, "ok")
    agent.monitor.heartbeat = time.monotonic() - 60  # its listings failed for a minute
    ok, why = agent.healthy()
    assert not ok and why.startswith("interface listing stalled for 6")
    agent.monitor.heartbeat = time.monotonic() - 10  # within three rescan periods: a blip
    assert agent.healthy() == (True, "ok")


def test_healthz_fails_when_the_conntrack_reader_stopped(make_agent):
    agent = make_agent("capture:\n  conntrack: true\n")
    assert agent.ct_reader is not None, "conntrack events are available to the tests (root, nf_conntrack)"
    assert agent.healthy() == (True, "ok")
    agent.ct_reader.heartbeat = time.monotonic() - 30  # its socket failed and its loop ended
    ok, why = agent.healthy()
    assert not ok and why.startswith("conntrack reader stalled")


# --- SIGHUP -----------------------------------------------------------------------------

def test_a_reload_whose_judges_fail_to_build_keeps_the_running_judges(make_agent, judge_factory, caplog):
    agent = make_agent()
    running = agent.pipeline.judges

    def explode(config, view):
        raise RuntimeError("judge cannot start")

    name = judge_factory("test-explodes", explode)
    Path(agent.options.config).write_text(NO_CONNTRACK + f"judges: [netpol, {name}]\nevents:\n  window: 5\n")
    with caplog.at_level(logging.ERROR, logger="flowwarden.run"):
        agent.reload()  # must not raise: the main loop would end
    assert agent.pipeline.judges is running and agent.events.window == 60
    assert [r.exc_info[0] for r in caplog.records if "reload failed" in r.getMessage()] == [RuntimeError]


def test_reload_builds_the_judges_while_holding_the_inventory_lock(make_agent, judge_factory):
    agent = make_agent()
    held: list[bool] = []

    def probe(config, view):  # could a watch thread change the store now?
        got: list[bool] = []
        thread = threading.Thread(target=lambda: got.append(agent.lock.acquire(timeout=0.05)))
        thread.start()
        thread.join()
        if got[0]:
            agent.lock.release()  # an RLock may only be released by its owner: not reached when held
        held.append(not got[0])
        return JUDGES["netpol"](config, view)

    name = judge_factory("test-probe", probe)
    Path(agent.options.config).write_text(NO_CONNTRACK + f"judges: [{name}]\n")
    agent.reload()
    assert held == [True]
    assert [j.name for j in agent.pipeline.judges] == ["netpol"]


# --- the wall-clock tick --------------------------------------------------------------

def test_the_wall_clock_tick_sweeps_the_flow_table_only_when_a_sweep_is_due(make_agent):
    agent = make_agent(NO_CONNTRACK + "flows:\n  udp_timeout: 10\n  closed_linger: 2\n")  # a sweep every 2 s
    table, t0 = agent.pipeline.table, 1_000_000.0
    udp = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=9999))
    agent.pipeline.feed([(t0, 1, udp)])  # the table sweeps on capture time too: now, next at t0 + 2
    agent.pipeline.feed([(t0 + 0.5, 1, udp)])  # last packet: idle from t0 + 10.5 on
    for t in range(2, 12, 2):
        agent._tick(t0 + t)
        assert len(table) == 1, t
    agent._tick(t0 + 10.5)  # idle long enough, but the last sweep was 0.5 s ago: no scan yet
    assert len(table) == 1
    agent._tick(t0 + 12)
    assert len(table) == 0 and agent.pipeline.totals.flows == 1


# --- attribution outlives the wait for a verdict ----------------------------------------

def test_the_grace_covers_the_longest_wait_between_a_flows_start_and_its_verdict():
    config = Config()  # grace 120, tcp_timeout 300, closed_linger 5, conntrack_wait 130
    assert effective_grace(config, conntrack=True) == 435
    assert effective_grace(config, conntrack=False) == 305
    config.inventory.grace = 1000
    assert effective_grace(config, conntrack=True) == 1000  # a longer configured grace stands
    config.flows.udp_timeout = 2000
    assert effective_grace(config, conntrack=False) == 2005


def test_the_live_store_keeps_deleted_pods_until_their_flows_are_judged(make_agent, kubeconfig, caplog):
    with caplog.at_level(logging.INFO, logger="flowwarden.run"):
        agent = make_agent(NO_CONNTRACK, kubeconfig=kubeconfig)
    assert agent.store.grace == effective_grace(load_config(agent.options.config), conntrack=False) == 305
    raised = [r.getMessage() for r in caplog.records if "inventory.grace raised" in r.getMessage()]
    assert raised == [("inventory.grace raised from 120s to 305s: flows are judged up to that long after "
                       "their last packet (flows.tcp_timeout + flows.closed_linger + capture.conntrack_wait)")]
    Path(agent.options.config).write_text(NO_CONNTRACK + "flows:\n  tcp_timeout: 900\n")
    agent.reload()
    assert agent.store.grace == 905


def test_a_cluster_file_store_keeps_its_configured_grace(make_agent):
    agent = make_agent()
    assert agent.store.grace == 120


def test_run_writes_text_events_with_o_text(make_agent, tmp_path):
    from agent.capture.pcap import read_frames
    agent = make_agent(format="text")
    for frames in read_frames([ROOT / "pcaps" / "http-allowed-and-denied" / "capture.pcap"]):
        agent.pipeline.feed(list(frames))
    agent.pipeline.finish()
    lines = (tmp_path / "events-0.jsonl").read_text().splitlines()
    assert lines and all(line.split()[0] in ("critical", "warning") for line in lines), lines
    assert any("policy-violation other/batch-job-7b5d6c8f9-mn4zx → api/api-6d8f7b9c5-kx2lp:8080/TCP established "
               "ingress denied: api/api-allow-frontend" in line for line in lines), lines  # the denying side
