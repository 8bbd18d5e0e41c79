"""flowwarden: a Kubernetes node agent that judges pod traffic against NetworkPolicies and TLS expectations."""
__version__ = "0.1.0"
