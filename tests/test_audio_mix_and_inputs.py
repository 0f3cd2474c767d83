"""The mixer's exact placement, the video timeline, and bad input: impossible plans, empty
briefs, unreadable videos and malformed LLM plans give one clear line or a repaired plan."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("piper", reason="needs the audio extra")

from agents.audio import dsp  # noqa: E402
from agents.audio.brief import load_brief  # noqa: E402
from agents.audio.compose import compose  # noqa: E402
from agents.audio.mixer import MixAggregator  # noqa: E402
from agents.audio.video import read_video  # noqa: E402
from agents.errors import SymoeError  # noqa: E402
from agents.teams import Artifact, Attempt, Context, Event, EventResult, Plan, PlanRejected  # noqa: E402

pytestmark = pytest.mark.audio
ROOT = Path(__file__).resolve().parents[1]
SYMOE = [sys.executable, "-m", "orchestrator.cli"]


def result_for(event: Event, x: np.ndarray, tmp: Path) -> EventResult:
    path = dsp.write_wav(tmp / f"{event.id}.wav", x)
    art = Artifact(path=path, generator="test", duration=len(x) / 44100, sample_rate=44100)
    return EventResult(event_id=event.id, attempts=[Attempt(event=event, generator="test", round=0, try_index=0,
                                                            artifact=art)], chosen=0)


def test_mixer_places_events_at_exact_sample_offsets(tmp_path: Path) -> None:
    events = [Event(id="a", type="effect", start=0.5, duration=0.5, description="a"),
              Event(id="b", type="speech", start=1.2345, duration=1.0, text="b"),
              Event(id="c", type="music", start=2.71828, duration=0.25, description="c"),
              Event(id="d", type="effect", start=2.8, duration=0.1, description="d")]  # overlaps c
    level = {"a": 0.25, "b": -0.5, "c": 0.125, "d": 0.25}
    results = {e.id: result_for(e, np.full(int(e.duration * 44100), level[e.id], np.float32), tmp_path)
               for e in events}
    outputs = MixAggregator().assemble(Plan(duration=4, events=events), results, tmp_path / "out", Context(tmp_path))
    mix = dsp.read_wav(outputs["wav"])
    assert len(mix) == 4 * 44100 and outputs["mix_gain"] == 1.0
    q = 1 / 32768
    for e in events[:3]:
        start = round(e.start * 44100)
        assert start == {"a": 22050, "b": 54441, "c": 119876}[e.id]
        assert mix[start - 1] == 0.0 or e.id == "c"
        assert abs(mix[start] - level[e.id]) <= q, e.id
        n = int(e.duration * 44100)
        assert abs(mix[start + n - 1] - level[e.id]) <= q * 2 or e.id == "c"
        if e.id != "c":
            assert mix[start + n] == 0.0
    d0 = round(2.8 * 44100)
    assert abs(mix[d0] - 0.375) <= q and abs(mix[d0 - 1] - 0.125) <= q  # sums where tracks overlap
    timeline = json.loads(Path(outputs["timeline"]).read_text())
    assert [e["sample_offset"] for e in timeline["events"]] == [22050, 54441, 119876, 123480]
    assert Path(outputs["png"]).read_bytes()[:4] == b"\x89PNG"


def test_mixer_scales_a_clipping_sum_by_one_gain(tmp_path: Path) -> None:
    events = [Event(id=f"e{i}", type="effect", start=0, duration=1, description="x") for i in range(3)]
    results = {e.id: result_for(e, np.full(44100, 0.6, np.float32), tmp_path) for e in events}
    outputs = MixAggregator().assemble(Plan(duration=1, events=events), results, tmp_path / "o", Context(tmp_path))
    mix = dsp.read_wav(outputs["wav"])
    assert outputs["mix_gain"] == pytest.approx(0.98 / 1.8, abs=1e-4)
    assert np.max(np.abs(mix)) == pytest.approx(0.98, abs=1e-3) and dsp.clipped_fraction(mix) == 0.0


def spoken(text: str, tmp: Path, event: Event) -> EventResult:
    """A real Piper take of ``text`` placed as ``event``, whose WER critic heard it right alone."""
    from agents.audio.tts import PiperTTS
    from agents.teams import Score

    art = PiperTTS().generate(event.model_copy(update={"text": text}), Context(tmp))
    score = Score(critic="wer", score=1.0, measured={"wer": 0.0, "heard": text})
    return EventResult(event_id=event.id, attempts=[Attempt(event=event, generator="piper", round=0, try_index=0,
                                                            artifact=art, scores=[score])], chosen=0)


def test_reviewer_turns_down_what_masks_a_line_and_retakes_a_misheard_one(tmp_path: Path, pool_home: Path) -> None:
    from agents.audio.review import MixReviewer

    line = "Bring the lantern to the window, quickly."
    speech = Event(id="line", type="speech", start=1.0, duration=3.5, text=line, loudness=-18)
    noise = Event(id="rain", type="effect", start=0, duration=6, description="rain", loudness=-18)
    rng = np.random.default_rng(0)
    rain = dsp.gain_to(rng.normal(0, 0.1, 6 * 44100).astype(np.float32), -18)
    plan = Plan(duration=6, events=[noise, speech])
    results = {"rain": result_for(noise, rain, tmp_path), "line": spoken(line, tmp_path, speech)}
    issues = MixReviewer(pool_home).review(plan, results, Context(tmp_path))
    # noise as loud as the voice: the rain is asked to come down, the line is left alone
    assert [(i.event_id, "loudness_delta" in i.hint) for i in issues] == [("rain", True)], issues
    assert issues[0].hint["loudness_delta"] <= -8 and "masks speech line" in issues[0].message
    # the voice alone in the mix but saying other words than planned: loud enough, so a new take
    quiet = {"line": spoken("The kettle is boiling in the kitchen.", tmp_path, speech)}
    issues = MixReviewer(pool_home).review(Plan(duration=6, events=[speech]), quiet, Context(tmp_path))
    assert [(i.event_id, i.hint) for i in issues] == [("line", {"params": {"retake": 1}})], issues
    assert "misheard in the mix" in issues[0].message


@pytest.fixture(scope="module")
def three_scene_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is not installed (apt-get install ffmpeg)")
    out = tmp_path_factory.mktemp("video") / "scenes.mp4"
    args = []
    for colour in ("red", "green", "blue"):
        args += ["-f", "lavfi", "-i", f"color=c={colour}:s=160x120:d=2:r=25"]
    subprocess.run(["ffmpeg", "-y", "-v", "error", *args, "-filter_complex", "concat=n=3:v=1:a=0",
                    "-pix_fmt", "yuv420p", str(out)], check=True, timeout=120)
    return out


def test_video_fixes_duration_and_cuts(three_scene_video: Path) -> None:
    info = read_video(three_scene_video)
    assert info.duration == pytest.approx(6.0, abs=0.05)
    assert info.cuts == pytest.approx([2.0, 4.0], abs=0.05)


def test_unreadable_or_missing_video(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(SymoeError, match="cannot read the video .*bad.mp4"):
        read_video(bad)
    with pytest.raises(SymoeError, match="no video file at"):
        read_video(tmp_path / "missing.mp4")


@pytest.mark.parametrize(("content", "suffix", "message"), [
    ("", ".txt", "is empty"),
    ("   \n", ".yaml", "is empty"),
    ("scenes: [unclosed", ".yaml", "is not valid YAML at line"),
    ("title: x\nscens: []", ".yaml", "unknown storyboard keys scens"),
    ('{"scenes": "nope"}', ".json", "storyboard field scenes"),
    ("title: only a title", ".yaml", "no scenes, events or brief text"),
])
def test_bad_briefs_give_one_clear_line(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"brief{suffix}"
    path.write_text(content)
    with pytest.raises(SymoeError, match=message):
        load_brief(str(path))


def test_empty_or_missing_brief() -> None:
    with pytest.raises(SymoeError, match="the brief is empty"):
        load_brief("  ")
    with pytest.raises(SymoeError, match="no brief file at"):
        load_brief("examples/nope.yaml")
    assert load_brief("waves and a bell").text == "waves and a bell"


IMPOSSIBLE = """
title: impossible
duration: 8
events:
  - {type: speech, start: -1, duration: 2, text: "Too early."}
  - {type: speech, start: 2, duration: 3, text: "First line here."}
  - {type: speech, start: 3, duration: 2, text: "Talking over it."}
  - {type: effect, start: 7, duration: 3, description: bell}
"""


def test_cli_rejects_an_impossible_storyboard(tmp_path: Path) -> None:
    brief = tmp_path / "impossible.yaml"
    brief.write_text(IMPOSSIBLE)
    proc = subprocess.run([*SYMOE, "compose", str(brief), "-o", str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: plan rejected by the supervisor:")
    for part in ("e1-speech (speech) starts at -1 s", "e3-speech (speech, 3-5 s) overlaps e2-speech (2-5 s) by 2.00 s",
                 "e4-effect (effect) ends at 10 s, after the brief's end at 8 s"):
        assert part in line
    assert not (tmp_path / "out" / "mix.wav").exists()


def test_cli_bad_video_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run([*SYMOE, "compose", "rain and a bell", "--video", str(bad), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot read the video")


def test_storyboard_longer_than_the_video_is_rejected(three_scene_video: Path, tmp_path: Path) -> None:
    with pytest.raises(PlanRejected, match="after the brief's end at 6 s"):
        compose(str(ROOT / "examples" / "brief_storm.yaml"), tmp_path, video=three_scene_video,
                llm=lambda p, s, n: "")


MALFORMED = """Sure! Here's your plan:
```json
[{"type": "Narration", "start": "0.5s", "text": "The tide is turning."},
 {"type": "sfx", "start": -3, "duration": 1.5, "description": "harbour bell ringing"},
 {"type": "music", "start": 0, "duration": 30, "description": "calm piano", "volume": 5},
 {"type": "hologram", "start": 1, "description": "???"},
```"""


def scripted(plan_reply: str):
    def llm(prompt: str, system: str, max_tokens: int) -> str:
        if "composer" in system:
            return "tempo: 70\ninstrument: piano\nnotes: C4/1 E4/1 G4/2 E4/1 D4/1 C4/2"
        return plan_reply
    return llm


def test_malformed_llm_plan_is_repaired_and_fits_the_video(three_scene_video: Path, tmp_path: Path,
                                                           pool_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMOE_HOME", str(pool_home))
    result = compose("A harbour at dawn: a bell, calm piano, a fisherman speaks.", tmp_path,
                     video=three_scene_video, llm=scripted(MALFORMED), profiles=tmp_path / "profiles.json")
    repairs = " | ".join(result.plan.repairs)
    for note in ("out of surrounding prose", "closed a truncated", "'Narration' read as 'speech'",
                 "moved to 0 s", "past the end (6 s)", "unknown type 'hologram'"):
        assert note in repairs, note
    assert result.plan.duration == pytest.approx(6.0, abs=0.05) and result.plan.cuts == pytest.approx([2, 4], abs=0.05)
    assert {e.type for e in result.plan.events} == {"speech", "effect", "music"}
    mix = dsp.read_wav(result.outputs["wav"])
    assert len(mix) == round(result.plan.duration * 44100)
    speech = next(e for e in result.plan.events if e.type == "speech")
    assert result.results[speech.id].best.scores[0].measured["wer"] <= 0.15  # type: ignore[union-attr]
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                            str(result.outputs["video"])], capture_output=True, text=True)
    assert probe.stdout.split() == ["video", "audio"]
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert any("scene cuts at 2 s, 4 s" in e["message"] for e in trace["entries"])


def test_llm_without_a_plan_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SymoeError, match="the plan has no events"):
        compose("a storm", tmp_path, llm=scripted("I am sorry, I cannot plan sounds."))
