# longctx — the two commands of the README, and the recipes.
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
LONGCTX := $(BUILD)/longctx

.PHONY: all setup data build test demo bench clean recipe-tiny

all: build

setup:
	./scripts/setup.sh

data: setup
	./scripts/fetch_data.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: setup $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: data build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

demo: data build
	./scripts/demo.sh

bench: data build
	./scripts/bench.sh

# Longer training than the demo: the checked-in transformer-tiny.
recipe-tiny: data build
	$(LONGCTX) train --config configs/transformer-tiny.json --out runs/recipe-tiny --steps 6000

clean:
	rm -rf $(BUILD)
