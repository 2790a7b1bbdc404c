# make install | run | test | bench | default-model | lint
# Every target installs what is missing first (idempotent; re-run after pyproject.toml changes).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT     := ffmpeg libportaudio2 mosquitto mosquitto-clients espeak-ng sox tmux
TORCH   := torch==2.13.0
ARGS    ?=
PYTEST_ARGS ?=

.PHONY: install system run test bench default-model default-model-eval lint clean

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
	$(PY) -m mmsa.model.export default >/dev/null  # the default model's ONNX graph (the scorer's runtime), into the user's cache
	touch $(STAMP)

run: install
	$(VENV)/bin/mmsa-monitor $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

# The embedded default model (docs/default-model.md): the stages configs/train/default/<n>_*.toml in
# order, each from the previous stage's checkpoint (train.init_from), then the last one is shipped.
# Run folders: $(DEFAULT_RUNS)/<stage>. FROM=3 reruns stages 3.. from the kept run of stage 2 (e.g. after
# changing the audio recipe). THREADS: torch threads (2 cores: 2; 1 when the cores are shared).
DEFAULT_RUNS    ?= runs/default-model
DEFAULT_CONFIGS := $(sort $(wildcard configs/train/default/[0-9]*.toml))
FROM    ?= 1
THREADS ?= 2

default-model: install
	@set -e; prev=; start=$$(date +%s); \
	for cfg in $(DEFAULT_CONFIGS); do \
	  out=$(DEFAULT_RUNS)/$$(basename $$cfg .toml); \
	  if [ $$(basename $$cfg | cut -d_ -f1) -lt $(FROM) ]; then prev=$$out/model.safetensors; continue; fi; \
	  echo "== $$cfg -> $$out"; \
	  OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/mmsa-train $$cfg --out $$out $${prev:+--set train.init_from=$$prev}; \
	  prev=$$out/model.safetensors; \
	done; \
	cp $$prev model/default/default.safetensors; \
	echo "model/default/default.safetensors: $$(du -k model/default/default.safetensors | cut -f1) KiB, built in $$(( $$(date +%s) - start )) s"

# The model card's figures (docs/default-model.md): mmsa-eval of the shipped model on every
# held-out set, written to model/default/eval/<set>.json (tests/model/test_default_model.py
# checks that mmsa-eval reproduces them and that the card quotes them).
DATA ?= ../shared/data
EVAL_SETS := mosi:valid:mosi/label.csv mosei:valid:mosei/label_valid.csv ravdess:test:ravdess/labels.csv \
             fer2013:valid:fer2013/labels.csv fer2013:test:fer2013/labels.csv
default-model-eval: install
	@set -e; mkdir -p model/default/eval; \
	for s in $(EVAL_SETS); do \
	  ds=$${s%%:*}; rest=$${s#*:}; split=$${rest%%:*}; labels=$${rest#*:}; \
	  echo "== mmsa-eval --model default --dataset $$ds --split $$split"; \
	  $(VENV)/bin/mmsa-eval --model default --dataset $$ds --labels $(DATA)/$$labels --split $$split \
	    --out model/default/eval/$${ds}_$$split.json --predictions $(DEFAULT_RUNS)/eval/$${ds}_$$split.csv \
	    --plot $(DEFAULT_RUNS)/eval/$${ds}_$$split.png; \
	done

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
