# longctx — the two commands of the README, and the recipes.
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
LONGCTX := $(BUILD)/longctx

.PHONY: all setup data build build-cli test demo bench clean recipe-tiny

all: build

setup:
	./scripts/setup.sh

data: setup
	./scripts/fetch_data.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# Only what the demo runs (the CLI and the SentencePiece shim): faster on a fresh machine.
build-cli: setup $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target longctx longctx_spm

test: data build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

demo: data build-cli
	./scripts/demo.sh

bench: data build
	./scripts/bench.sh

# Longer training than the demo: the checked-in models/transformer-tiny (F16 weights).
RECIPE_TINY_STEPS ?= 2500
recipe-tiny: data build-cli
	rm -rf runs/recipe-tiny
	$(LONGCTX) train --config configs/transformer-tiny.json --out runs/recipe-tiny --steps $(RECIPE_TINY_STEPS) \
	  --set train.eval_every=500 --set train.checkpoint_every=500
	$(LONGCTX) export --model runs/recipe-tiny --out models/transformer-tiny --dtype F16

clean:
	rm -rf $(BUILD)
