"""Each audio generator's real output checked by its critics, and the rewrites that fix real
failures (a clipped thunder crack, a line too long for its slot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("piper", reason="needs the audio extra")

from agents.audio import dsp, sfx  # noqa: E402
from agents.audio.compose import build_team, default_critics  # noqa: E402
from agents.audio.critics import ClippingCritic, DurationCritic, LoudnessCritic, WERCritic  # noqa: E402
from agents.audio.music import LLMMidi, MotifMidi, parse_notes  # noqa: E402
from agents.audio.rewrite import AudioRewriter  # noqa: E402
from agents.audio.sfx import NoiseSfx, SynthSfx  # noqa: E402
from agents.audio.tts import EspeakTTS, PiperTTS  # noqa: E402
from agents.audio.whisper import model_dir, wer  # noqa: E402
from agents.pool import sha256_file as sha256  # noqa: E402
from agents.teams import Artifact, Context, DomainExpert, Event, GeneratorProfiles  # noqa: E402

pytestmark = pytest.mark.audio
LINE = "The storm is coming, close the shutters now."


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(workdir=tmp_path, seed=3)


def judge_all(event: Event, artifact, home: Path, ctx: Context) -> dict[str, object]:
    return {c.name: c.judge(event, artifact, ctx) for c in default_critics(home, event.type)}


def test_wer_counts_word_edits() -> None:
    assert wer("Close the shutters now!", "close the shutters now") == 0.0
    assert wer("one two three four", "one too three") == pytest.approx(0.5)
    assert wer("It is 3 o'clock", "it is three o'clock") == 0.0


def test_whisper_model_is_assembled_and_verified(pool_home: Path) -> None:
    d = model_dir(pool_home)
    assert sha256(d / "model.bin") == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert (d / "tokenizer.json").exists() and (d / ".verified").exists()


def heard_within_budget(event: Event, ctx: Context, home: Path, tries: int = 3) -> tuple[Artifact, list[dict]]:
    """Piper takes until one passes the WER critic, as the supervisor retries them.

    Piper samples its prosody noise inside the ONNX graph, which onnxruntime.set_seed does not
    make repeatable: about one take in ten is misheard by a word or two (a CI run heard "This
    storm is coming close to the shutters now."). The claim tested is the team's: a line is
    heard right within its retry budget of three takes."""
    takes: list[dict] = []
    critic = WERCritic(home)
    for _ in range(tries):
        art = PiperTTS().generate(event, ctx)
        takes.append(critic.judge(event, art, ctx).measured)
        if takes[-1]["wer"] <= 0.15:
            break
    return art, takes


def test_piper_line_passes_every_critic(pool_home: Path, ctx: Context) -> None:
    event = Event(id="l", type="speech", start=0, duration=3.5, text=LINE, loudness=-18)
    art, takes = heard_within_budget(event, ctx, pool_home)
    assert takes[-1]["wer"] <= 0.15, takes
    scores = judge_all(event, art, pool_home, ctx)
    assert all(s.score >= 0.7 for s in scores.values()), {k: s.score for k, s in scores.items()}
    assert abs(scores["loudness"].measured["lufs"] + 18) <= 2
    assert art.sample_rate == 44100 and 1.5 < art.duration < 3.5


def test_espeak_line_is_transcribed_and_scored_below_piper(pool_home: Path, ctx: Context) -> None:
    event = Event(id="l", type="speech", start=0, duration=4, text="Bring the lantern to the window, quickly.")
    e_art = EspeakTTS().generate(event, ctx)
    p_art = PiperTTS().generate(event, ctx)
    critic = WERCritic(pool_home)
    e_wer = critic.judge(event, e_art, ctx).measured["wer"]
    p_wer = critic.judge(event, p_art, ctx).measured["wer"]
    assert e_wer < 0.6 and p_wer <= e_wer, (e_wer, p_wer)
    assert ClippingCritic().judge(event, e_art, ctx).score == 1.0


def natural(ctx: Context):
    """The line at its natural pace (piper's length varies a few % from run to run)."""
    return PiperTTS().generate(Event(id="n", type="speech", start=0, duration=10, text=LINE), ctx)


def test_too_long_line_fails_duration_and_is_sped_up(pool_home: Path, ctx: Context) -> None:
    art = natural(ctx)
    event = Event(id="l", type="speech", start=0, duration=round(art.duration / 1.13, 3), text=LINE)
    first = DurationCritic().judge(event, art, ctx)
    assert first.score < 0.7 and first.hint["speed"] == pytest.approx(1.13, abs=0.01), first
    event2, note = AudioRewriter().rewrite(event, [first], ctx)  # type: ignore[misc]
    assert "speak 1.1" in note and event2.params["rate"] == pytest.approx(1.13 * 1.05, abs=0.01)
    assert event2.text == LINE
    art2, takes = heard_within_budget(event2, ctx, pool_home)
    assert takes[-1]["wer"] <= 0.15, takes
    assert art2.duration < art.duration
    assert DurationCritic().judge(event2, art2, ctx).score >= 0.7


def test_far_too_long_line_is_shortened(pool_home: Path, ctx: Context) -> None:
    art = natural(ctx)
    event = Event(id="l", type="speech", start=0, duration=round(art.duration / 1.4, 3), text=LINE)
    first = DurationCritic().judge(event, art, ctx)
    ctx.llm = lambda prompt, system, n: "Close the shutters right now."
    event2, note = AudioRewriter().rewrite(event, [first], ctx)  # type: ignore[misc]
    assert "shortened to 5 words" in note and event2.text == "Close the shutters right now."
    art2, takes = heard_within_budget(event2, ctx, pool_home)
    assert takes[-1]["wer"] <= 0.15, takes
    assert DurationCritic().judge(event2, art2, ctx).score >= 0.7
    ctx.llm = None  # without a model the line is cut at a word boundary
    event3, _ = AudioRewriter().rewrite(event, [first], ctx)  # type: ignore[misc]
    assert event3.text == "The storm is coming, close."


def test_music_from_llm_notes_and_motif(pool_home: Path, ctx: Context) -> None:
    reply = "tempo: 84\ninstrument: strings\nnotes: A3/1 C4/1 E4/2 D4/1 C4/1 B3/2 R/1 A3/3 Zz9/1"
    score, fixed = parse_notes(reply)
    assert score.tempo == 84 and score.instrument == "strings" and len(score.notes) == 8
    ctx.llm = lambda prompt, system, n: reply
    for gen in (LLMMidi(), MotifMidi()):
        event = Event(id=f"m-{gen.name}", type="music", start=0, duration=5, description="tense storm theme",
                      loudness=-24)
        art = gen.generate(event, ctx)
        x = dsp.read_wav(art.path)
        assert len(x) == 5 * 44100
        scores = judge_all(event, art, pool_home, ctx)
        assert all(s.score >= 0.7 for s in scores.values()), {k: (s.score, s.measured) for k, s in scores.items()}


def test_malformed_llm_notes_hand_over_to_the_motif(pool_home: Path, ctx: Context) -> None:
    ctx.llm = lambda prompt, system, n: "I'd love to help! Music is wonderful."
    expert = DomainExpert("music", [LLMMidi(), MotifMidi()], default_critics(pool_home, "music"), GeneratorProfiles(),
                          AudioRewriter())
    result = expert.run(Event(id="m", type="music", start=0, duration=3, description="calm"), 0, ctx)
    assert "no usable notes" in (result.attempts[0].error or "")
    assert result.best is not None and result.best.generator == "midi-motif"


@pytest.mark.parametrize("name", sorted(sfx.RECIPES))
def test_every_effect_recipe_fills_its_slot(name: str, ctx: Context) -> None:
    event = Event(id=f"fx-{name}", type="effect", start=0, duration=1.5, description=name, loudness=-26,
                  params={"recipe": name, "limiter": True})
    art = SynthSfx().generate(event, ctx)
    x = dsp.read_wav(art.path)
    assert len(x) == int(1.5 * 44100) and np.max(np.abs(x)) > 0.01
    assert art.meta["recipe"] == name


def test_clipped_thunder_is_rerendered_through_the_limiter(pool_home: Path, ctx: Context) -> None:
    expert = DomainExpert("effect", [SynthSfx(), NoiseSfx()], default_critics(pool_home, "effect"),
                          GeneratorProfiles(), AudioRewriter())
    event = Event(id="t", type="effect", start=0, duration=2, description="a loud thunder crack", loudness=-16)
    result = expert.run(event, 0, ctx)
    first, last = result.attempts[0], result.attempts[-1]
    clip = next(s for s in first.scores if s.critic == "clipping")
    assert clip.score < 0.7 and clip.measured["clipped"] > 0.003
    assert last.event.params.get("limiter") is True and last.passed(0.7)
    assert last.generator == "synth-sfx"
    assert dsp.clipped_fraction(dsp.read_wav(last.artifact.path)) == 0.0  # type: ignore[union-attr]
    assert abs(next(s for s in last.scores if s.critic == "loudness").measured["lufs"] + 16) <= 2
    assert any(e.stage == "rewrite" and "limiter" in e.message for e in ctx.trace.entries)


def test_loudness_critic_measures_lufs(ctx: Context) -> None:
    event = Event(id="n", type="effect", start=0, duration=2, description="steady rain", loudness=-30)
    art = NoiseSfx().generate(event, ctx)
    s = LoudnessCritic().judge(event, art, ctx)
    assert abs(s.measured["lufs"] + 30) <= 0.5 and s.score == 1.0
    off = LoudnessCritic().judge(event.model_copy(update={"loudness": -20}), art, ctx)
    assert off.score < 0.7 and off.hint["gain_db"] == pytest.approx(10, abs=0.5)  # 10 dB too quiet


def test_build_team_has_an_expert_per_type(pool_home: Path) -> None:
    team = build_team(pool_home, GeneratorProfiles())
    assert set(team.experts) == {"speech", "music", "effect"}
    assert [g.name for g in team.experts["speech"].candidates()] == ["piper", "espeak"]


def test_misheard_line_is_slowed_then_reworded(ctx: Context) -> None:
    from agents.teams import Score

    event = Event(id="l", type="speech", start=0, duration=3, text="Light the lamp. Quickly now.")
    misheard = [Score(critic="wer", score=0.6, measured={"wer": 0.2}, hint={"clearer": True}),
                Score(critic="duration", score=1.0, measured={"ratio": 0.6})]
    ctx.llm = lambda prompt, system, n: "Quickly, light the lamp."
    slowed, note = AudioRewriter().rewrite(event, misheard, ctx)  # type: ignore[misc]
    assert slowed.params["rate"] == 0.9 and slowed.text == event.text and "slower" in note
    reworded, note = AudioRewriter().rewrite(slowed, misheard, ctx)  # type: ignore[misc]
    assert reworded.text == "Quickly, light the lamp." and "reworded" in note
