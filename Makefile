# make install | run | test | bench | default-model | lint
# Every target installs what is missing first (idempotent; re-run after pyproject.toml changes).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT     := ffmpeg libportaudio2 mosquitto mosquitto-clients espeak-ng sox tmux
TORCH   := torch==2.13.0
ARGS    ?=
PYTEST_ARGS ?=
# make test's pytest-xdist workers: 2 overlaps the paced (real-time) replays with the CPU-bound tests on
# 2 cores (1,053 -> 673 s here); 0 runs the suite in one process, in file order.
TEST_WORKERS ?= 2

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
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

# The embedded default model (docs/default-model.md): the stages configs/train/default/<n>_*.toml in
# order, each from the previous stage's checkpoint (train.init_from); before stage 3 the held-out audio
# twin (configs/train/default/heldout/, actors 01-16, from stage 2), both on the RAVDESS files and on the
# windows the monitor's segmenter cuts of them (examples/ravdess_windows.py, written once to $(WINDOWS));
# then mmsa-fit-fusion calibrates
# the heads on held-out data (MOSI valid, FER2013 valid, RAVDESS actors 17-20 scored by the twin), sets
# the fusion's text gate (docs/default-model.md, "Fusion") and its checkpoint is
# shipped. Run folders: $(DEFAULT_RUNS)/<stage>. FROM=3 reruns stages 3.. from the kept run of stage 2;
# FROM=5 only refits the fusion. THREADS: torch threads (2 cores: 2; 1 when the cores are shared).
DEFAULT_RUNS    ?= runs/default-model
DEFAULT_CONFIGS := $(sort $(wildcard configs/train/default/[0-9]*.toml))
AUDIO_TWIN      := configs/train/default/heldout/3_audio_actors_1-16.toml
TWIN_RUN        := $(DEFAULT_RUNS)/3_audio_actors_1-16
WINDOWS         := $(DEFAULT_RUNS)/ravdess_windows
FROM    ?= 1
THREADS ?= 2
DATA    ?= ../shared/data
FIT_FUSION := --heldout text mosi $(DATA)/mosi/label.csv valid --heldout audio ravdess $(DATA)/ravdess/labels.csv test \
              --gate text

default-model: install
	@set -e; prev=; start=$$(date +%s); \
	for cfg in $(DEFAULT_CONFIGS); do \
	  stage=$$(basename $$cfg | cut -d_ -f1); out=$(DEFAULT_RUNS)/$$(basename $$cfg .toml); \
	  if [ $$stage -lt $(FROM) ]; then prev=$$out/model.safetensors; continue; fi; \
	  win=; \
	  if [ $$stage = 3 ]; then \
	    test -f $(WINDOWS)/labels.csv || { echo "== examples/ravdess_windows.py -> $(WINDOWS)"; \
	      $(PY) examples/ravdess_windows.py $(WINDOWS) --data $(DATA)/ravdess; }; \
	    win="--set data.train.1.labels=$(WINDOWS)/labels.csv"; \
	    echo "== $(AUDIO_TWIN) -> $(TWIN_RUN)"; \
	    OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/mmsa-train $(AUDIO_TWIN) --out $(TWIN_RUN) --set train.init_from=$$prev \
	      $$win --set data.valid.1.labels=$(WINDOWS)/labels.csv; \
	  fi; \
	  echo "== $$cfg -> $$out"; \
	  OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/mmsa-train $$cfg --out $$out $${prev:+--set train.init_from=$$prev} $$win; \
	  prev=$$out/model.safetensors; \
	done; \
	echo "== mmsa-fit-fusion -> $(DEFAULT_RUNS)/5_fusion"; \
	OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/mmsa-fit-fusion --model $$prev --out $(DEFAULT_RUNS)/5_fusion/model.safetensors \
	  --report $(DEFAULT_RUNS)/5_fusion/calibration.json $(FIT_FUSION) \
	  --heldout vision fer2013 $(DATA)/fer2013/labels.csv valid --heldout-model audio $(TWIN_RUN)/model.safetensors; \
	cp $(DEFAULT_RUNS)/5_fusion/model.safetensors model/default/default.safetensors; \
	mkdir -p model/default/eval; cp $(DEFAULT_RUNS)/5_fusion/calibration.json model/default/eval/calibration.json; \
	echo "model/default/default.safetensors: $$(du -k model/default/default.safetensors | cut -f1) KiB, built in $$(( $$(date +%s) - start )) s"

# The model card's figures (docs/default-model.md): mmsa-eval of the shipped model on every
# held-out set, written to model/default/eval/<set>.json (tests/model/test_default_model.py
# checks that mmsa-eval reproduces them and that the card quotes them). RAVDESS actors 17-20 are
# scored by the calibrated twin (the shipped audio branch trained on them): audio alone (the files, and
# the windows the monitor cuts of them), and text + audio with Whisper's transcripts
# (examples/ravdess_asr.py), the fused check of the card.
EVAL_SETS := mosi:valid::mosi/label.csv mosei:valid:heldout:mosei/label_valid.csv \
             fer2013:valid::fer2013/labels.csv fer2013:test::fer2013/labels.csv
EVAL_OUT  := $(DEFAULT_RUNS)/eval
default-model-eval: install
	@set -e; mkdir -p model/default/eval $(EVAL_OUT); \
	for s in $(EVAL_SETS); do \
	  ds=$${s%%:*}; rest=$${s#*:}; split=$${rest%%:*}; rest=$${rest#*:}; videos=$${rest%%:*}; labels=$${rest#*:}; \
	  name=$${ds}_$$split$${videos:+_$$videos}; \
	  echo "== mmsa-eval --model default --dataset $$ds --split $$split $${videos:+--videos $$videos}"; \
	  $(VENV)/bin/mmsa-eval --model default --dataset $$ds --labels $(DATA)/$$labels --split $$split \
	    $${videos:+--videos $$videos} --out model/default/eval/$$name.json --predictions $(EVAL_OUT)/$$name.csv \
	    --plot $(EVAL_OUT)/$$name.png; \
	done; \
	echo "== the held-out audio twin, calibrated like the shipped model"; \
	$(VENV)/bin/mmsa-fit-fusion --model $(TWIN_RUN)/model.safetensors --out $(EVAL_OUT)/twin.safetensors \
	  --report $(EVAL_OUT)/twin_calibration.json $(FIT_FUSION); \
	$(VENV)/bin/mmsa-eval --model $(EVAL_OUT)/twin.safetensors --dataset ravdess --labels $(DATA)/ravdess/labels.csv \
	  --split test --out model/default/eval/ravdess_test_heldout.json --predictions $(EVAL_OUT)/ravdess_test_heldout.csv \
	  --plot $(EVAL_OUT)/ravdess_test_heldout.png; \
	test -f $(WINDOWS)/labels.csv || $(PY) examples/ravdess_windows.py $(WINDOWS) --data $(DATA)/ravdess; \
	$(VENV)/bin/mmsa-eval --model $(EVAL_OUT)/twin.safetensors --dataset ravdess --labels $(WINDOWS)/labels.csv \
	  --split test --out model/default/eval/ravdess_windows_test_heldout.json \
	  --predictions $(EVAL_OUT)/ravdess_windows_test_heldout.csv --plot $(EVAL_OUT)/ravdess_windows_test_heldout.png; \
	test -f $(EVAL_OUT)/ravdess_asr.csv || $(PY) examples/ravdess_asr.py $(DATA)/ravdess/labels.csv \
	  $(EVAL_OUT)/ravdess_asr.csv --actors 17 18 19 20; \
	$(VENV)/bin/mmsa-eval --model $(EVAL_OUT)/twin.safetensors --dataset ravdess --labels $(EVAL_OUT)/ravdess_asr.csv \
	  --root $(DATA)/ravdess --split test --out model/default/eval/ravdess_asr_test_heldout.json \
	  --predictions $(EVAL_OUT)/ravdess_asr_test_heldout.csv --plot $(EVAL_OUT)/ravdess_asr_test_heldout.png

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
