"""The shipped profile (``orchestrator/default_profile.json``) is what one documented command
makes from the committed default-pool matrix (``make profile``: ``symoe profile build
--from-matrix data/matrices/default-pool.jsonl.gz``), field for field, but for the fields
named here that record when and with which package versions it was made. Real: the shipped
MiniLM embeds the matrix's questions (no LLM runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.matrix import read_matrix
from eval.replay import profile_by_replay
from orchestrator.config import load_config
from orchestrator.profiles import default_profile_path

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parent.parent
MATRIX = "data/matrices/default-pool.jsonl.gz"
#: fields that differ between two builds of the same matrix: when, and with which versions
MAY_DIFFER = {("data", "created"), ("provenance", "versions"), ("provenance", "config_hash")}


def without(profile: dict) -> dict:
    out = json.loads(json.dumps(profile))
    for section, field in MAY_DIFFER:
        out.get(section, {}).pop(field, None)
    return out


def test_the_shipped_profile_is_what_make_profile_makes_from_the_committed_matrix(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the matrix's path is recorded as the command gives it
    made, _, _ = profile_by_replay(load_config(), read_matrix(Path(MATRIX)))
    shipped = json.loads(default_profile_path().read_text())
    fresh = json.loads(made.model_dump_json())  # as save_profile writes it
    assert shipped["data"]["matrix"] == MATRIX, "the shipped profile was not made from the committed matrix"
    assert without(fresh) == without(shipped), "run `make profile` and commit orchestrator/default_profile.json"
    assert shipped["router"] and shipped["router"] == fresh["router"]
