"""`flowwarden suggest`: observed flows -> proposed NetworkPolicies, with a proof.

After the sinks: flows observed by the pipeline (a replay's ends, or the flow
records of `replay/run --flows`) are shaped into per-workload policies
(`shape.py`), written as commented YAML (`render.py`), then every observed flow
is judged again with the current policies plus the suggestions by the same
NetworkPolicy engine as the what-if judge (`proof.py`).
"""
