# The whole set-up on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FW     := $(VENV)/bin/flowwarden
# System tools the live tests, the pcap recording and tests/deploy need (Debian package names;
# prometheus brings promtool and the Prometheus server of the alerting end-to-end test).
SYSTEM_TOOLS := ip:iproute2 tcpdump:tcpdump openssl:openssl curl:curl nft:nftables promtool:prometheus setcap:libcap2-bin

.PHONY: demo test bench bench-tools tools clean record

$(VENV)/.installed: pyproject.toml setup.py agent/_hotpath.c agent/_compact.h agent/_capture.h
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

CRAFTED := $(filter-out %/corrupt-magic.pcap %/truncated-file.pcap,$(wildcard pcaps/crafted/*.pcap*))

# Each scenario's events as text, under one line (pcaps/demo.txt) saying what it shows.
demo: $(VENV)/.installed
	@for name in $(sort $(patsubst pcaps/%/capture.pcap,%,$(wildcard pcaps/*/capture.pcap))); do \
	  echo "== pcaps/$$name: $$(sed -n "s/^$$name: //p" pcaps/demo.txt)"; \
	  $(FW) replay pcaps/$$name/capture.pcap --cluster pcaps/$$name/cluster.json -o text || exit $$?; \
	done
	@echo "== pcaps/crafted: $$(sed -n 's/^crafted: //p' pcaps/demo.txt)"
	@$(FW) replay $(CRAFTED) --cluster pcaps/crafted/cluster.json -o text

# ip, nft and setcap live in /usr/sbin, which a non-root PATH often lacks. Only root installs; another
# user is told what is missing, and the tests that need it (or root) skip, saying so.
tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then \
	  echo "missing:$$missing (run 'make tools' as root to install them; the tests that need them skip)"; \
	fi

# The per-packet path exists twice (agent/_hotpath.c and its Python reference): the flow, decode and
# scenario tests run again on the Python path, which must give the same results.
test: $(VENV)/.installed tools
	FLOWWARDEN_PURE_PYTHON=1 $(PY) -m pytest -p no:cacheprovider -q tests/flows tests/decode tests/scenarios tests/sinks tests/capture tests/test_pipeline.py
	$(PY) -m pytest -p no:cacheprovider -rs

bench: $(VENV)/.installed bench-tools
	$(PY) bench/run.py

# bench_live.py compares the agent with Suricata 7 (AF_PACKET) on the same lab when `suricata` is there:
# root installs it from Debian bookworm-backports (sources.list.d must list bookworm-backports);
# otherwise the live bench measures flowwarden alone and says so.
bench-tools:
	@if command -v suricata >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then \
	  echo "installing: suricata (bookworm-backports)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    -t bookworm-backports suricata >/dev/null; \
	else \
	  echo "suricata missing (root with bookworm-backports in apt sources installs it); bench_live.py measures flowwarden alone"; \
	fi

record:
	bash pcaps/record.sh
	$(PY) pcaps/craft.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
