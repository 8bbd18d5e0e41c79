"""API objects -> model objects: workloads from ownerReferences."""
import pytest

from agent.inventory.objects import workload_of


@pytest.mark.parametrize("refs, labels, expected", [
    ([{"kind": "ReplicaSet", "name": "web-7d9f8c6b5", "controller": True}], {"pod-template-hash": "7d9f8c6b5"},
     "Deployment/web"),
    ([{"kind": "ReplicaSet", "name": "standalone", "controller": True}], {}, "ReplicaSet/standalone"),
    ([{"kind": "Job", "name": "backup-29012345", "controller": True}], {}, "CronJob/backup"),
    ([{"kind": "Job", "name": "migrate", "controller": True}], {}, "Job/migrate"),
    ([{"kind": "StatefulSet", "name": "db", "controller": True}], {}, "StatefulSet/db"),
    # an owner that is not the controller (controller unset means false) is not the workload
    ([{"kind": "ConfigMap", "name": "cm"}, {"kind": "DaemonSet", "name": "agent", "controller": True}], {},
     "DaemonSet/agent"),
    ([{"kind": "ConfigMap", "name": "cm"}], {}, None),
])
def test_the_workload_is_the_controller_owner_resolved_by_name(refs, labels, expected):
    assert workload_of({"ownerReferences": refs, "labels": labels}) == expected
