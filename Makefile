# Two commands do all set-up on a fresh Debian 12 machine (as root):
#   make demo   builds everything and runs the demo end to end on real OVS
#   make test   builds everything and runs every test
VENV ?= .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := openvswitch-switch etcd-server iproute2 ethtool iperf3 iputils-ping \
                util-linux procps python3-venv
STAMP := $(VENV)/.installed

.PHONY: demo test deps debs venv lint clean

demo: deps
	$(PY) -m testbed.demo $(DEMO_ARGS)

test: deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

deps: debs venv

# Debian packages, installed only when one of them is missing.
debs:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
