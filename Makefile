# Two commands set up a fresh machine:  `make ask`  (install + answer a question)
#                                       `make test` (install + the whole test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
SYMOE := $(VENV)/bin/symoe
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
QUESTION ?= What is the capital of France?
# llama.cpp compiled for this CPU but without its AMX kernels: on VMs that advertise AMX without
# running it they die with SIGILL (seen here: `tilezero` in ggml_backend_amx_mul_mat). --no-cache-dir
# so that a wheel built elsewhere with other flags is never reused.
NO_AMX := -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'

.PHONY: install system-deps ask test test-fast test-vllm lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0           # the local CPU wheel; never the CUDA one
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir "llama-cpp-python[server]==0.3.36"
	$(PY) -m pip install -q -e ".[dev,audio]"
	$(SYMOE) models prepare
	touch $@

install: system-deps $(VENV)/.installed

# Debian packages for the audio team (TTS fallback, MIDI synth, soundfont, video tools).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v fluidsynth >/dev/null || ! command -v ffmpeg >/dev/null \
	   || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    espeak-ng fluidsynth fluid-soundfont-gm ffmpeg; fi

ask: install
	$(SYMOE) ask "$(QUESTION)"

test: install
	$(VENV)/bin/pytest -q
	$(MAKE) test-vllm

test-fast: install
	$(VENV)/bin/pytest -q -m "not real and not audio"

test-vllm:
	bash .ci/vllm.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/backends.py

clean:
	rm -rf $(VENV) .venv-vllm
