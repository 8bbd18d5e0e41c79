"""Test support for the live inventory: a loopback Kubernetes API server (`server`),
API objects as it returns them (`objects`) and pytest fixtures (`fixtures`).

Test modules import the fixtures by name: `from tests.kubeapi import kubeapi, kubeconfig`.
"""
from tests.kubeapi.fixtures import FakeClock, eventually, kubeapi, kubeconfig, start_inventory
from tests.kubeapi.objects import endpointslice, namespace, networkpolicy, node, pod, rfc3339, service
from tests.kubeapi.server import TOKEN, FakeKubeAPI, Fault, write_kubeconfig

__all__ = ["FakeClock", "FakeKubeAPI", "Fault", "TOKEN", "endpointslice", "eventually", "kubeapi",
           "kubeconfig", "namespace", "networkpolicy", "node", "pod", "rfc3339", "service",
           "start_inventory", "write_kubeconfig"]
