# Two entry points (see README): `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages: real data, a real sshd for SSH tests, qemu-user + mmdebstrap for the aarch64 device
APT_DEMO := dataset-fashion-mnist
APT_TEST := $(APT_DEMO) openssh-server openssh-client iproute2 nftables qemu-user-static mmdebstrap arch-test chromium fonts-dejavu-core
APT_BENCH := $(APT_TEST) opencv-doc
PYTEST_ARGS ?=

.PHONY: demo test setup setup-test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[tflite,executorch,dev,bench,distributed]'
	touch $@

setup: $(BIN)/.installed
	@scripts/ensure-apt.sh $(APT_DEMO)

setup-test: $(BIN)/.installed
	@scripts/ensure-apt.sh $(APT_TEST)

demo: setup
	$(BIN)/edgekit deploy example:fashion-cnn --device pi4 --emulate

test: setup-test
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(BIN)/.installed
	@scripts/ensure-apt.sh $(APT_BENCH)
	$(BIN)/python benchmarks/runner_overhead.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/compression.py
	$(BIN)/python benchmarks/deploy.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache benchmarks/results
