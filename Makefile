# The whole set-up on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FW     := $(VENV)/bin/flowwarden
# System tools the live tests, the pcap recording and tests/deploy need (Debian package names;
# prometheus brings promtool and the Prometheus server of the alerting end-to-end test).
SYSTEM_TOOLS := ip:iproute2 tcpdump:tcpdump openssl:openssl curl:curl nft:nftables promtool:prometheus setcap:libcap2-bin

.PHONY: demo test bench tools clean record

$(VENV)/.installed: pyproject.toml setup.py agent/_hotpath.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

CRAFTED := $(filter-out %/corrupt-magic.pcap %/truncated-file.pcap,$(wildcard pcaps/crafted/*.pcap*))

demo: $(VENV)/.installed
	@for dir in $(sort $(dir $(wildcard pcaps/*/capture.pcap))); do \
	  echo "== $$dir (recorded traffic)"; \
	  $(FW) replay $${dir}capture.pcap --cluster $${dir}cluster.json || exit $$?; \
	done
	@echo "== pcaps/crafted/ (edge cases: VLAN, QinQ, overlays, fragments, truncated and garbage packets)"
	@$(FW) replay $(CRAFTED) --cluster pcaps/crafted/cluster.json

tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The per-packet path exists twice (agent/_hotpath.c and its Python reference): the flow, decode and
# scenario tests run again on the Python path, which must give the same results.
test: $(VENV)/.installed tools
	FLOWWARDEN_PURE_PYTHON=1 $(PY) -m pytest -p no:cacheprovider -q tests/flows tests/decode tests/scenarios tests/sinks tests/test_pipeline.py
	$(PY) -m pytest -p no:cacheprovider -rs

bench: $(VENV)/.installed
	$(PY) bench/run.py

record:
	bash pcaps/record.sh
	$(PY) pcaps/craft.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
