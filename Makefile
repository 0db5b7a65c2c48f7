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

# The main job: make a synthetic clip with exact ground truth, segment it with the bundled
# weights (masks + overlay video), score crossnet next to MOG2/KNN on it, and cache its 3D-HOP
# with a preview picture; with ../shared/data present, also score the real UCSD scenes.
# Rerunning it is safe: the scene and caches made the same way are kept (synth and preprocess
# skip or resume them); the masks, overlay and score files are made again (--overwrite).
demo: install
	$(BIN)/crossnet synth $(DEMO_DIR)/synth --scenes 1 --frames 150 --size 320x240 --seed 0 --no-progress
	$(BIN)/crossnet segment $(DEMO_DIR)/synth/scene_000/scene_000.mp4 --out $(DEMO_DIR)/masks --overlay $(DEMO_DIR)/overlay.mp4 --overwrite
	$(BIN)/crossnet evaluate $(DEMO_DIR)/synth/scene_000 --method crossnet --method mog2 --method knn --json $(DEMO_DIR)/synth_eval.json --overwrite --no-progress
	$(BIN)/crossnet preprocess $(DEMO_DIR)/synth --out $(DEMO_DIR)/cache --strides 1,4,8 --preview --no-progress
	@if [ -d $(SHARED_DATA)/UCSD_BGS ]; then \
	  $(BIN)/crossnet evaluate $(SHARED_DATA)/UCSD_BGS --method crossnet --method mog2 --method knn --json $(DEMO_DIR)/ucsd_eval.json --overwrite --no-progress; fi
	@echo "demo outputs in $(DEMO_DIR)/: masks/binNNNNNN.png and overlay.mp4 (the segmented clip),"
	@echo "  synth/scene_000 (frames, ground truth, flow.h5, .mp4), *_eval.json (scores),"
	@echo "  cache/scene_000.h5 and cache/scene_000_preview.png (frame | flow per stride)"

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info .pytest_cache
