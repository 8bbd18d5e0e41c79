"""`plaintext-credentials-protocol`: credentials cross the network in the clear (judges stage, Code layer).

The first-bytes classifier (agent/decode/app.py) notes the presence of a login in a plaintext
protocol as `flow.credentials`: FTP `USER`/`PASS`, Telnet, POP3/IMAP/SMTP logins without
STARTTLS, HTTP `Authorization: Basic`. Only that a login was seen is reported, never its value.
"""
from __future__ import annotations

from agent.judges.rules.base import Rule, plaintext
from agent.model import CLASSIFIED, CRITICAL, Endpoint, Flow


class PlaintextCredentials(Rule):
    id = "plaintext-credentials-protocol"
    severity = CRITICAL
    stage = CLASSIFIED
    rationale = ("Code layer: access over TCP is TLS only; credentials never cross in the clear "
                 "(Kubernetes docs, Cloud Native Security: Code)")

    def finds(self, flow: Flow, src: Endpoint, dst: Endpoint):
        if flow.credentials is None or not plaintext(flow):
            return None
        return f"{flow.app} carried a login in the clear ({flow.credentials})", {"credentials": flow.credentials}
