"""Agents: experts, aggregators and team agents behind one backend interface.

``agents.backends`` holds the engines (llama.cpp, transformers, vLLM, OpenAI-compatible
servers) registered by name; ``agents.pool`` describes the experts as data and locates
their model files offline; ``agents.prompts`` turns chat requests into prompts.
"""
