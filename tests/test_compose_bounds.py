"""``symoe compose`` bounds every brief before anything is planned or allocated: scene times,
the soundtrack's length (``MAX_TOTAL_S``, 30 minutes), the scene and event counts. The brief
of issue 26 (one scene, ``start: -5, duration: 36000``, ten hours) once allocated 24 GB in the
mixer and was killed; it is refused in one line, in seconds, in a few hundred MB. And the mixer
holds each event's clip, not a full-length track per event. No model and no audio extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import one_error_line

from agents.audio import dsp, mixer
from agents.audio.brief import MAX_EVENTS, MAX_SCENES, MAX_TOTAL_S, load_brief
from agents.errors import SymoeError
from agents.teams import Artifact, Attempt, Event, EventResult, Plan

ROOT = Path(__file__).resolve().parents[1]
TEN_HOURS = """title: ten hours of rain
scenes:
  - start: -5
    duration: 36000
    description: rain on the lantern room windows
"""


#: runs the command, exits with its status, and writes its own peak RSS (KiB) and CPU seconds
LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([usage.ru_maxrss, usage.ru_utime + usage.ru_stime], f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_the_ten_hour_brief_is_refused_in_one_line_in_seconds_and_little_memory(tmp_path: Path) -> None:
    brief = tmp_path / "long.yaml"
    brief.write_text(TEN_HOURS)
    config = tmp_path / "fake.yaml"  # an expert whose model file does not exist: nothing can load
    config.write_text(yaml.safe_dump({"replace_pool": True, "default_expert": "fake",
                                      "experts": {"fake": {"path": str(tmp_path / "missing" / "fake.gguf")}}}))
    env = {**{k: v for k, v in os.environ.items() if not k.upper().startswith("SYMOE_")},
           "SYMOE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out, err, measured = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "usage.json"
    command = [sys.executable, "-m", "orchestrator.cli", "compose", str(brief), "-o", str(tmp_path / "out"),
               "-c", str(config)]
    began = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        # measured by a small launcher: Linux counts a forked child's peak RSS from its parent's
        # (this test process holds the models earlier tests loaded), the launcher's child from its own
        code = subprocess.call([sys.executable, "-c", LAUNCHER, str(measured), *command], stdout=stdout,
                               stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    seconds = time.perf_counter() - began
    proc = subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
    one_error_line(proc, "scene 1 starts at -5 s", "scene 1 lasts 36000 s", "1800 s (30 minutes)")
    peak_kb, cpu = json.loads(measured.read_text())
    peak_mb = peak_kb / 1024
    print(f"refused in {seconds:.2f} s wall, {cpu:.2f} CPU-s, peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    # the refusal costs the CLI's start-up (its imports) and reading five lines: under 5 s of
    # CPU always, and under 5 s of wall time unless other work oversubscribes the machine
    assert cpu < 5, f"{cpu:.2f} CPU-s"
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    assert seconds < 5 or busy, f"{seconds:.2f} s wall for {cpu:.2f} CPU-s on an idle machine"
    assert not (tmp_path / "out").exists()  # refused before the output folder (stems) is made


def storyboard(tmp_path: Path, data: object) -> str:
    path = tmp_path / "brief.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


OVER = [
    ({"scenes": [{"start": -5, "duration": 10, "description": "x"}]}, "scene 1 starts at -5 s"),
    ({"scenes": [{"start": 0, "duration": 0, "description": "x"}]}, "scene 1 lasts 0 s"),
    ({"scenes": [{"start": 0, "duration": -2, "description": "x"}]}, "scene 1 lasts -2 s"),
    ({"scenes": [{"start": 0, "duration": 1801, "description": "x"}]}, "scene 1 lasts 1801 s"),
    ({"scenes": [{"start": 1000, "duration": 900, "description": "x"}]}, "scene 1 ends at 1900 s"),
    ({"scenes": [{"start": float("inf"), "duration": 1, "description": "x"}]}, "scene 1 starts at inf s"),
    ({"duration": 7200, "scenes": [{"start": 0, "duration": 5, "description": "x"}]}, "duration 7200 s"),
    ({"duration": 0, "text": "rain"}, "duration 0 s"),
    ({"scenes": [{"start": i, "duration": 1, "description": "x"} for i in range(MAX_SCENES + 1)]},
     f"{MAX_SCENES + 1} scenes (at most {MAX_SCENES})"),
    ({"events": [{"type": "effect", "start": 0, "duration": 1, "description": "x"}] * (MAX_EVENTS + 1)},
     f"{MAX_EVENTS + 1} events (at most {MAX_EVENTS})"),
    ({"events": [{"type": "effect", "start": 0, "duration": 36000, "description": "x"}]}, "event duration 36000 s"),
    ({"scenes": [{"start": 0, "duration": 5, "events": [{"type": "speech", "start": 1e12, "text": "hi"}]}]},
     "scene 1 event start 1e+12 s"),
]


@pytest.mark.parametrize(("data", "said"), OVER, ids=[s for _, s in OVER])
def test_briefs_over_the_bounds_are_one_line(tmp_path: Path, data: dict, said: str) -> None:
    with pytest.raises(SymoeError, match="over symoe's bounds") as caught:
        load_brief(storyboard(tmp_path, data))
    message = str(caught.value)
    assert said in message and "\n" not in message, message


def test_an_alias_bomb_is_counted_before_it_is_built(tmp_path: Path) -> None:
    event = "{type: effect, start: 0, duration: 1, description: x}"
    text = (f"events: &es [{', '.join([event] * 100)}]\nscenes:\n"  # 50 scenes share the 100 events
            + "".join(f"  - {{start: {i}, duration: 1, events: *es}}\n" for i in range(50)))
    began = time.perf_counter()
    with pytest.raises(SymoeError, match=f"50 scenes \\(at most {MAX_SCENES}\\), 5100 events \\(at most"):
        load_brief(storyboard(tmp_path, text))
    assert time.perf_counter() - began < 2


def test_a_huge_brief_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "brief.txt"
    path.write_bytes(b"rain " * 300_000)
    with pytest.raises(SymoeError, match="1500000 bytes; at most 1048576"):
        load_brief(str(path))


def test_briefs_at_the_bounds_are_read(tmp_path: Path) -> None:
    brief = load_brief(storyboard(tmp_path, {"scenes": [{"start": 0, "duration": 1200, "description": "rain"},
                                                        {"start": 1200, "duration": 600, "description": "bell"}]}))
    assert brief.total == MAX_TOTAL_S == 1800
    assert load_brief(storyboard(tmp_path, {"duration": 1800, "text": "rain"})).total == 1800
    brief = load_brief(storyboard(tmp_path, {"duration": 8, "events": [  # the plan critic judges these
        {"type": "speech", "start": -1, "duration": 2, "text": "Too early."}]}))
    assert brief.events[0]["start"] == -1
    # a length set later (a video's) is bounded where the planner reads it
    with pytest.raises(SymoeError, match="would last 7200 s; at most 1800 s"):
        _ = brief.model_copy(update={"duration": 7200.0}).total


def test_tracks_hold_clips_not_full_length_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sr = dsp.SAMPLE_RATE
    rng = np.random.default_rng(0)
    clips = {f"e{i}": rng.uniform(-0.1, 0.1, sr).astype(np.float32) for i in range(40)}
    monkeypatch.setattr(dsp, "read_wav", lambda path, sr=sr: clips[Path(path).stem])
    events = [Event(id=f"e{i}", type="effect", start=i * 15.0 - (3 if i == 0 else 0), duration=1,
                    description="x") for i in range(40)]
    events.append(Event(id="late", type="effect", start=700, duration=1, description="x"))
    clips["late"] = clips["e1"]
    results = {e.id: EventResult(event_id=e.id, chosen=0, attempts=[Attempt(
        event=e, generator="t", round=0, try_index=0,
        artifact=Artifact(path=tmp_path / f"{e.id}.wav", generator="t", duration=1.0, sample_rate=sr))])
        for e in events}
    plan = Plan(duration=600, events=events)  # 10 minutes: 106 MB a full-length float32 track
    full = mixer.offset(plan.duration)
    tracemalloc.start()
    try:
        total, gain, ts = mixer.mix(plan, results)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * full * 4, f"{peak / 1e6:.0f} MB for one {full * 4 / 1e6:.0f} MB mix"  # not 41 tracks
    # the same samples a dense full-length track per event gives
    dense = np.zeros(full, np.float32)
    for e in events:
        a = mixer.offset(e.start)
        clip = clips[e.id][:mixer.offset(e.duration)]
        if a < 0:
            clip, a = clip[-a:], 0
        clip = clip[:max(0, full - a)]
        track = np.zeros(full, np.float32)
        track[a:a + len(clip)] = clip
        if e.id in ("e0", "e7"):
            assert len(ts[e.id]) == full
            for key in (slice(None, None, 997), slice(a - 10, a + 100), slice(0, 5), slice(full - 5, None)):
                assert np.array_equal(ts[e.id][key], track[key]), (e.id, key)
        dense += track
    assert gain == 1.0 and np.array_equal(total, dense)
    assert "late" in ts and not np.any(ts["late"][0:full])  # past the end: silent, no error
