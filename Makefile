# Two commands set up a fresh machine:  `make ask`  (install + answer a question)
#                                       `make test` (install + the tests CI runs)
# `make test`: the fast suite (control flow on the scripted `fake` backend: every test not marked
# real, audio or vllm) plus one real test per face (marked `face`: ask, ask/eval parity, server,
# lm-eval, Ray, sandboxed program, compose). No vLLM. About 25 minutes on 2 cores, install included.
# `make test-all`: the whole suite (every real test, the pool races, audio end to end) and vLLM CPU.
VENV ?= .venv
PY := $(VENV)/bin/python
SYMOE := $(VENV)/bin/symoe
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
QUESTION ?= What is the capital of France?
DEFAULT_MATRIX := data/matrices/default-pool.jsonl.gz
# llama.cpp built portable (AVX2, FMA, F16C; no -march=native): a native build picks AMX kernels
# that die with SIGILL on VMs advertising AMX without running it (seen here: `tilezero` in
# ggml_backend_amx_mul_mat), and per-CPU kernels round differently, so the same seed gave other
# text on other machines. Decoding is memory-bound: the portable build is as fast here (1.5B:
# 5.16 s vs 5.20 s for the same 48 tokens). --no-cache-dir: never reuse a wheel built otherwise.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF

.PHONY: install system-deps ask test test-all test-fast test-vllm lint bench profile clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0           # the local CPU wheel; never the CUDA one
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir "llama-cpp-python[server]==0.3.36"
	$(PY) -m pip install -q -e ".[dev,audio,lm-eval,ray]"
	$(SYMOE) models prepare
	$(SYMOE) index corpus                           # the built-in retrieval index (a few minutes, once)
	touch $@

install: system-deps $(VENV)/.installed
	@if [ -d data/generations ]; then $(SYMOE) cache import data/generations; fi  # committed generations, once each

# Debian packages for the audio team (TTS fallback, MIDI synth, soundfont, video tools).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v fluidsynth >/dev/null || ! command -v ffmpeg >/dev/null \
	   || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    espeak-ng fluidsynth fluid-soundfont-gm ffmpeg; fi

ask: install
	$(SYMOE) ask "$(QUESTION)"

# `and` binds tighter than `or`: (the fast suite) or (a face's real test)
FAST := not real and not audio and not vllm
PYTEST := $(VENV)/bin/pytest -q --durations=25

test: install
	$(PYTEST) -m "$(FAST) or face"

test-all: install
	$(PYTEST)
	$(MAKE) test-vllm

test-fast: install
	$(PYTEST) -m "$(FAST)"

test-vllm:
	bash .ci/vllm.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/backends.py

# The shipped profile, remade from the committed default-pool matrix (no generation; its router
# is the winner of cross-fitted replay). tests/test_shipped_profile.py checks the two agree.
profile: install
	$(SYMOE) profile build --from-matrix $(DEFAULT_MATRIX) -o orchestrator/default_profile.json

clean:
	rm -rf $(VENV) .venv-vllm
