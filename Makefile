# longctx — the two commands of the README, and the recipes.
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
LONGCTX := $(BUILD)/longctx

.PHONY: all setup data build build-cli test demo bench clean recipe-tiny recipe-infini-passkey recipe-megalodon

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

# Infini-attention trained for passkey retrieval on inputs of at most 2K tokens (curriculum over
# the key's distance, mixed with ordinary text), then scored from 4K to 1M tokens. Resumes an
# interrupted run. The checked-in models/infini-passkey came from this recipe.
RECIPE_INFINI_STEPS ?= 2500
PASSKEY_SEED ?= 1
recipe-infini-passkey: data build-cli
	if ls runs/infini-passkey/checkpoint-* >/dev/null 2>&1; then resume=--resume; else resume=; fi; \
	$(LONGCTX) train --config configs/infini-passkey.json --out runs/infini-passkey --steps $(RECIPE_INFINI_STEPS) $$resume
	$(LONGCTX) export --model runs/infini-passkey --out models/infini-passkey --dtype F16
	$(LONGCTX) eval passkey --model models/infini-passkey --lengths 4096,32768,262144,1048576 \
	  --depths 0,25,50,75,100 --samples 20 --seed $(PASSKEY_SEED) --out runs/infini-passkey/passkey

# MEGALODON against the transformer of the same size (0.875M vs 0.870M parameters): the same
# SOTU split, 1024-token rows, 1500 steps of 4 rows (6.1M tokens), seed 0. Resumes.
RECIPE_MEGA_STEPS ?= 1500
recipe-megalodon: data build-cli
	for m in megalodon-tiny transformer-tiny-1k; do \
	  if ls runs/$$m/checkpoint-* >/dev/null 2>&1; then r=--resume; else r=; fi; \
	  $(LONGCTX) train --config configs/$$m.json --out runs/$$m --steps $(RECIPE_MEGA_STEPS) $$r || exit 1; \
	done
	$(LONGCTX) export --model runs/megalodon-tiny --out models/megalodon-tiny --dtype F16

clean:
	rm -rf $(BUILD)
