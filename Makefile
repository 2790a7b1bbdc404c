# make install | run | test | bench | default-model | lint
# Every target installs what is missing first (idempotent; re-run after pyproject.toml changes).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT     := ffmpeg libportaudio2 mosquitto mosquitto-clients espeak-ng sox tmux
TORCH   := torch==2.13.0
ARGS    ?=
PYTEST_ARGS ?=

.PHONY: install system run test bench default-model lint clean

install: system $(STAMP)

# Debian packages: installed only when one is missing (apt-get as root, else through sudo).
system:
	@missing=$$(for p in $(APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# torch first: the pinned release is a CPU build from local disk here and the CUDA build on GPU
# machines; installing the project afterwards never pulls another torch.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(VENV)/bin/mmsa-monitor $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

default-model: install
	$(VENV)/bin/mmsa-train configs/train/default.toml

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
