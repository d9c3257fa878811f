# longctx — the two commands of the README, and the recipes.
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
LONGCTX := $(BUILD)/longctx

.PHONY: all setup data build build-cli build-test test demo demo-full bench clean recipe-tiny recipe-infini-passkey recipe-fam-passkey recipe-megalodon recipe-rho1 recipe-longrope recipe-beacon recipe-ruler-mix recipe-ruler-niah1 recipe-dnet-passkey fuzz

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

# What the tests run (the CLI, which the serve tests start as a process, and the test binary);
# the benchmarks are built by `make bench`.
build-test: setup $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target longctx longctx_tests

test: data build-test
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

demo: data build-cli
	./scripts/demo.sh

# The long tour: training from scratch (600 steps), 1M-token passkey prompts and streams, the
# whole of Moby Dick through MEGALODON, the results table at 64K (31 minutes here, 22 of them the
# results table, whose full-attention models read 64K-token passkey prompts).
demo-full: data build-cli
	DEMO_FULL=1 ./scripts/demo.sh

bench: data build
	./scripts/bench.sh

# libFuzzer on the parsers of untrusted files (clang from Debian): each target runs FUZZ_RUNS
# executions from the seeds in fuzz/corpus/NAME, with a 10 s limit per input. The parsers are
# compiled with clang's coverage and sanitizers; hf_config links the rest of longctx_core as built.
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= tokenizer_json safetensors_header hf_config
TORCH_FLAGS := -I/usr/include/torch/csrc/api/include -D_GLIBCXX_USE_CXX11_ABI=1
TORCH_LIBS := -ltorch -ltorch_cpu -lc10
FUZZ_tokenizer_json := src/text/bpe.cpp src/io/fs.cpp -lpcre2-8 -licuuc
FUZZ_safetensors_header := $(TORCH_FLAGS) src/io/safetensors.cpp src/io/fs.cpp $(TORCH_LIBS)
FUZZ_hf_config := $(TORCH_FLAGS) src/model/hf.cpp src/model/config.cpp src/io/json_fields.cpp \
  $(BUILD)/liblongctx_core.a $(TORCH_LIBS) -lpcre2-8 -licuuc -lsqlite3 -lpthread -ldl
fuzz: setup $(BUILD)/CMakeCache.txt
	@command -v clang++ >/dev/null || $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq clang
	cmake --build $(BUILD) -j $(JOBS) --target longctx_core
	mkdir -p $(BUILD)/fuzz
	set -eo pipefail; for t in $(FUZZ_TARGETS); do \
	  case $$t in tokenizer_json) src="$(FUZZ_tokenizer_json)";; safetensors_header) src="$(FUZZ_safetensors_header)";; \
	    hf_config) src="$(FUZZ_hf_config)";; *) echo "unknown fuzz target $$t"; exit 1;; esac; \
	  echo "== $$t"; \
	  clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -Isrc -I$(BUILD) fuzz/$$t.cpp $$src -o $(BUILD)/fuzz/$$t; \
	  rm -rf $(BUILD)/fuzz/corpus-$$t && cp -r fuzz/corpus/$$t $(BUILD)/fuzz/corpus-$$t; \
	  $(BUILD)/fuzz/$$t -runs=$(FUZZ_RUNS) -timeout=10 -rss_limit_mb=4096 -max_len=8192 -print_final_stats=1 \
	    $(BUILD)/fuzz/corpus-$$t 2>&1 | tail -n 6; \
	done

# Longer training than the demo: the checked-in models/transformer-tiny (F16 weights).
RECIPE_TINY_STEPS ?= 2500
recipe-tiny: data build-cli
	rm -rf runs/recipe-tiny
	$(LONGCTX) train --config configs/transformer-tiny.json --out runs/recipe-tiny --steps $(RECIPE_TINY_STEPS) \
	  --set train.eval_every=500 --set train.checkpoint_every=500
	$(LONGCTX) export --model runs/recipe-tiny --out models/transformer-tiny --dtype F16

# Infini-attention for passkey retrieval, trained on inputs of at most 512 tokens, and its
# same-budget comparisons (linear rule, sliding window): scripts/infini_passkey.sh says how.
# Resumes; about 70 minutes of training and scoring here, plus the 4K-1M evaluation (hours at
# LONG_SAMPLES=20; RESULTS used 4 and 2 samples per cell).
recipe-infini-passkey: data build-cli
	LONGCTX=$(LONGCTX) scripts/infini_passkey.sh

# Passkey retrieval that survives length (issue 20): Infini-attention with DeltaNet's memory,
# trained in stages (early check, A: copying, B: 1-4 segments, C: 2K -> 16K) with the pass and
# kill criteria of ../shared/RETRIEVAL.md; verdicts in runs/dnet-passkey/stages.jsonl. Resumes.
recipe-dnet-passkey: data build-cli
	LONGCTX=$(LONGCTX) scripts/dnet_passkey.sh

# TransformerFAM vs BSWA on the same passkey budget (issue 6): scripts/fam_passkey.sh says how.
recipe-fam-passkey: data build-cli
	LONGCTX=$(LONGCTX) scripts/fam_passkey.sh

# MEGALODON against the transformer of the same size (0.875M vs 0.870M parameters): the same
# SOTU split, 1024-token rows, 1500 steps of 4 rows (6.1M tokens), seed 0. Resumes.
RECIPE_MEGA_STEPS ?= 1500
recipe-megalodon: data build-cli
	for m in megalodon-tiny transformer-tiny-1k; do \
	  if ls runs/$$m/checkpoint-* >/dev/null 2>&1; then r=--resume; else r=; fi; \
	  $(LONGCTX) train --config configs/$$m.json --out runs/$$m --steps $(RECIPE_MEGA_STEPS) $$r || exit 1; \
	done
	$(LONGCTX) export --model runs/megalodon-tiny --out models/megalodon-tiny --dtype F16
	$(LONGCTX) export --model runs/transformer-tiny-1k --out models/transformer-tiny-1k --dtype F16
	LONGCTX=$(LONGCTX) ./scripts/megalodon_eval.sh runs/megalodon-tiny runs/transformer-tiny-1k runs/megalodon-eval

# RHO-1 selective language modeling (docs/RESULTS.md): the reference on 40 clean held-out
# addresses, then baseline / selective 60% / selective 70% / random 60% on the noisy stream, and
# a MEGALODON baseline/selective pair; plots in runs/rho1-report. Resumes. About 75 minutes here.
recipe-rho1: data build-cli
	LONGCTX=$(LONGCTX) ./scripts/rho1.sh runs

# LongRoPE and the RoPE-scaling family on models/transformer-tiny (docs/RESULTS.md): searches,
# evaluation at 1x..32x W, the same short fine-tune for each method, progressive search, short
# factors. Resumes. About 75 minutes on one thread here.
recipe-longrope: data build-cli
	LONGCTX=$(LONGCTX) ./scripts/longrope.sh runs/longrope
	LONGCTX=$(LONGCTX) PASSKEY="longrope=runs/longrope/ft-longrope yarn=runs/longrope/ft-yarn" PASSKEY_SAMPLES=5 \
	  ./scripts/longrope_report.sh runs/longrope

# Activation Beacon on models/transformer-tiny-1k (issue 7): trains the beacons of the frozen
# base, then bits per byte on Moby Dick from W to 64W and the whole book against the base, its
# sliding window and PI/NTK, and passkey; scripts/beacon.sh says how. Resumes. Exports the
# beacons' model to models/beacon-tiny.
recipe-beacon: data build-cli
	LONGCTX=$(LONGCTX) scripts/beacon.sh
	$(LONGCTX) export --model runs/beacon/train --out models/beacon-tiny --dtype F16

clean:
	rm -rf $(BUILD)

# Every mechanism of the zoo trained on RULER's task mixture with the same budget, then RULER
# (4K-128K; 1M for the bounded mixers), lost in the middle, streaming speed and state bytes, and
# the tables of docs/RESULTS.md (scripts/ruler_mix.sh says how). Resumes.
recipe-ruler-mix: data build
	LONGCTX=$(LONGCTX) BENCH=$(BUILD)/bench_stream ./scripts/ruler_mix.sh

recipe-ruler-niah1: data build
	LONGCTX=$(LONGCTX) ./scripts/ruler_niah1.sh
