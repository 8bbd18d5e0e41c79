"""Validate Prometheus Operator objects (YAML documents on stdin) against the CRDs' openAPIV3Schema,
as cloudcoil's models generated from those CRDs carry them, made strict like the API server's field
validation (an unknown field is an error, not dropped). Prints one JSON list of errors, one per object.

Run as its own process (tests/deploy/test_deploy_manifests.py): the models must be built after the
strictness is set, and pytest may have imported parts of cloudcoil already (its plugin).
"""
import json
import sys

import yaml

import cloudcoil.pydantic

cloudcoil.pydantic.BaseModel.model_config["extra"] = "forbid"
import pydantic  # noqa: E402
from cloudcoil import apimachinery  # noqa: E402
from cloudcoil.models.prometheus_operator import v1  # noqa: E402

assert apimachinery.ObjectMeta.model_config["extra"] == v1.ServiceMonitor.model_config["extra"] == "forbid"
errors = []
for doc in yaml.safe_load_all(sys.stdin):
    if not doc:
        continue
    if doc.get("apiVersion") != "monitoring.coreos.com/v1" or not hasattr(v1, doc.get("kind", "")):
        errors.append(f"{doc.get('apiVersion')} {doc.get('kind')}: not a monitoring.coreos.com/v1 kind")
        continue
    try:
        getattr(v1, doc["kind"]).model_validate(doc)
        errors.append(None)
    except pydantic.ValidationError as e:
        errors.append(f"{doc['kind']} {doc['metadata'].get('name')}: {e}")
print(json.dumps(errors))
