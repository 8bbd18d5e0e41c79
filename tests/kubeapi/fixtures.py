"""pytest fixtures and helpers: the fake API server, a kubeconfig for it, a started inventory."""
import time

import pytest

from tests.kubeapi.server import FakeKubeAPI, write_kubeconfig


@pytest.fixture
def kubeapi():
    api = FakeKubeAPI().start()
    yield api
    api.stop()


@pytest.fixture
def kubeconfig(kubeapi, tmp_path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", kubeapi.url)


class FakeClock:
    """The inventory's clock, set by the test (epoch seconds)."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def eventually(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout}s")


@pytest.fixture
def start_inventory(kubeconfig):
    """start_inventory(store=None, *, clock=None, **Inventory options) -> a started Inventory."""
    from agent.inventory.store import Store
    from agent.inventory.kubeconfig import load_api_client
    from agent.inventory.watch import Inventory

    started = []

    def start(store=None, *, clock=None, **options):
        clock = clock or time.time
        options = {"backoff": (0.01, 0.2), "watch_timeout": 5, **options}
        inventory = Inventory(load_api_client(kubeconfig), store or Store(grace=120, clock=clock),
                              clock=clock, **options)
        inventory.start()
        started.append(inventory)
        return inventory

    yield start
    for inventory in started:
        inventory.stop()
