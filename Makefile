# Two commands a new user needs:  `make demo` (the main job) and `make test` (install + tests).
# Both create a virtual environment in .venv and install torch FIRST, pinned: letting pip pick
# torch as a dependency would choose the newest build with several GB of CUDA packages.

PYTHON        ?= python3
VENV          ?= .venv
TORCH_VERSION ?= 2.13.0
BIN            = $(VENV)/bin
DEMO_DIR      ?= demo_out
SHARED_DATA   ?= ../shared/data

.PHONY: install test test-all lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(BIN)/python -m pytest -m "not slow"

test-all: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check crossnet flow pipelines tests benchmarks

# The main job. Until the segmentation model ships, the best working pipeline is: make a synthetic
# scene with exact ground truth, score the MOG2 baseline on it, and on a real UCSD scene if present.
demo: install
	$(BIN)/crossnet synth $(DEMO_DIR)/synth --scenes 1 --frames 150 --size 320x240 --seed 0
	$(BIN)/crossnet evaluate $(DEMO_DIR)/synth/scene_000 --method mog2 --method knn --json $(DEMO_DIR)/synth_eval.json
	@if [ -d $(SHARED_DATA)/UCSD_BGS ]; then \
	  $(BIN)/crossnet evaluate $(SHARED_DATA)/UCSD_BGS --method mog2 --json $(DEMO_DIR)/ucsd_mog2.json; fi
	@echo "demo outputs in $(DEMO_DIR)/ (scene frames, ground truth, flow, video, metrics JSON)"

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info .pytest_cache
