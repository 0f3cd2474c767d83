"""Admission that knows how long work takes (issue 26), on scripted (fake) experts: the work
clock learns a router's seconds alone from requests that shared the machine; the forecast
says when a new request would finish and whom it would make late; a request forecast past
its deadline is degraded at once (to ``degrade_to``) or refused at once (429 with
``Retry-After``) instead of timing out; an expert that fails is answered for by
``degrade_to`` (the record says so); ``degrade_to: cheapest`` is the profile's fastest expert."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_cancel import metric, post, slow_config
from test_server import Running, make_config

from agents.errors import SymoeError
from orchestrator.profiles import ExpertProfile, Profile, SkillCount, save_profile
from orchestrator.provenance import pool_digest
from orchestrator.server.service import Admission, Service


def test_the_work_clock_counts_shared_seconds_as_the_work_alone() -> None:
    admission = Admission(slots=4, queued=0)
    first, second = admission.enter("r"), admission.enter("r")
    time.sleep(0.6)  # both ran the whole time: each did 0.3 s of work alone
    first.outcome = second.outcome = "done"
    admission.release(first)
    admission.release(second)
    assert admission.expected("r") == pytest.approx(0.3 * 0.7 + 0.3 * 0.3, abs=0.08)
    cut = admission.enter("r")
    time.sleep(0.1)
    cut.outcome = "cut"  # a cut request's work was at least this: it never lowers the mean
    admission.release(cut)
    assert admission.expected("r") == pytest.approx(0.3, abs=0.08)
    failed = admission.enter("other")
    admission.release(failed)  # no outcome (failed or cancelled): nothing learnt
    assert admission.expected("other") is None


def test_the_forecast_shares_the_machine_and_names_whom_it_would_make_late() -> None:
    admission = Admission(slots=4, queued=4)
    now = time.monotonic()
    admission.enter("big", work=10.0, due=now + 30)
    finish, late = admission.forecast(2.0)
    assert finish == pytest.approx(4.0, abs=0.05) and late == []  # 2 s of its own, 2 s of the big one's
    tight = admission.enter("tight", work=1.0, due=now + 2.5)  # on time alone with the big one (2 s)...
    finish, late = admission.forecast(2.0)
    assert finish == pytest.approx(5.0, abs=0.05) and late == [tight]  # ...not with another 1 s of work


def wait_running(running: Running, n: int = 1) -> None:
    began = time.monotonic()
    while running.service.admission.running < n and time.monotonic() - began < 30:
        time.sleep(0.01)
    assert running.service.admission.running >= n


def test_a_request_forecast_past_its_deadline_is_degraded_or_refused_at_once(tmp_path: Path) -> None:
    config = slow_config(tmp_path, delay=2.0, deadline_s=6.0, degrade_to="single:alpha", degrade_when_queued=5)
    with Running(Service(config)) as running:
        service = running.service
        # what the admission has learnt: the slow expert alone takes 30 s of work, the router 5 s
        service.admission.learned.update({"single:slow": 30.0, "majority:alpha+slow": 5.0})
        first: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: first.append(post(running, model="slow")))
        worker.start()
        wait_running(running)  # alone: admitted whatever its forecast
        degraded = post(running, model="majority:alpha+slow")  # 5 s + 5 s of the first's: past 0.9 x 6 s
        assert degraded.status_code == 200, degraded.text
        record = degraded.json()["symoe"]
        assert record["degraded"] and record["experts"] == ["alpha"] and not record["deadline_exceeded"]
        assert "forecast to finish in" in record["degraded_why"] and "single:alpha instead of majority" in \
            record["degraded_why"]
        start = time.monotonic()
        refused = post(running, model="slow")  # one expert named: nothing cheaper, and it would be late
        assert refused.status_code == 429 and time.monotonic() - start < 3.0, refused.text
        assert "forecast to finish in" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        worker.join(30)
        assert first[0].status_code == 200 and not first[0].json()["symoe"]["degraded"]
        assert metric(running, "rejected") == 1 and metric(running, "degraded") == 1
        assert metric(running, "timed_out") == 0


def test_with_admit_by_deadline_off_the_same_request_waits_for_its_deadline(tmp_path: Path) -> None:
    config = slow_config(tmp_path, delay=3.0, deadline_s=4.0, max_in_flight=1, admit_by_deadline=False)
    with Running(Service(config)) as running:
        running.service.admission.learned["single:slow"] = 30.0
        worker = threading.Thread(target=lambda: post(running, model="slow"))
        worker.start()
        wait_running(running)
        start = time.monotonic()
        late = post(running, model="slow", messages=[  # another question: the generation cache has none
            {"role": "user", "content": "What is the capital of France?"}])  # 3 s queued, 3 s its own: past 4 s
        took = time.monotonic() - start
        worker.join(30)
        # no answer in time: a 504 at the deadline, or a 429 when its wait for a slot ran into it
        assert late.status_code in (429, 504) and took > 2.0, (late.status_code, took)


def test_an_expert_that_fails_is_answered_for_by_degrade_to(tmp_path: Path) -> None:
    config = make_config(tmp_path, degrade_to="single:alpha", cooldown_failures=2)
    with Running(Service(config)) as running:
        for _ in range(2):
            reply = post(running, model="broken")
            assert reply.status_code == 200, reply.text
            body = reply.json()
            record = body["symoe"]
            assert "391" in body["choices"][0]["message"]["content"] and record["experts"] == ["alpha"]
            assert record["degraded"] and record["failed_experts"] == ["broken"]
            assert record["degraded_why"].startswith("single:broken failed (") and "answered by single:alpha" in \
                record["degraded_why"]
        assert metric(running, "fell_back") == 2 and metric(running, "degraded") == 2
        assert "broken" in httpx.get(running.url + "/health").json()["cooled_down"]
        cooled = post(running, model="broken")  # cooled down: degraded at the door, not a 503
        assert cooled.status_code == 200 and "cannot serve now" in cooled.json()["symoe"]["degraded_why"]
    plain = make_config(tmp_path / "plain")
    with Running(Service(plain)) as running:
        assert post(running, model="broken").status_code == 503  # no degrade_to: the failure is the answer


def test_degrade_to_cheapest_is_the_profiles_fastest_expert(tmp_path: Path) -> None:
    config = make_config(tmp_path, degrade_to="cheapest")
    count = SkillCount(right=9, wrong=1)
    seconds = {"alpha": 4.0, "beta": 1.5, "broken": 9.0}
    save_profile(Profile(pool=pool_digest(config), annotator="alpha",
                         experts={n: ExpertProfile(skills={"arithmetic": count}, questions=10, seconds=10 * s)
                                  for n, s in seconds.items()},
                         aggregators={"alpha": ExpertProfile(tasks={"t": count})}), tmp_path / "profile.json")
    service = Service(config)
    try:
        assert str(service.degrade_to) == "single:beta"
        assert service.admission.expected("single:beta") == pytest.approx(1.5)  # the profile's time is the prior
        assert math.isclose(service.admission.expected("single:alpha") or 0, 4.0)
    finally:
        service.close()
    with pytest.raises(SymoeError, match="server.degrade_to 'cheapest'"):
        Service(make_config(tmp_path / "none", degrade_to="cheapest"))


def hedge_config(tmp_path: Path, **server: object):
    """alpha answers at once; slow and slow2 take 30 s: ``majority:slow+slow2`` has nothing when cut."""
    from test_server import ANSWERS

    from agents.pool import ExpertSpec

    config = slow_config(tmp_path, delay=30.0, **server)
    experts = {**config.experts, "slow2": ExpertSpec(name="slow2", backend="fake",
                                                     params={"answers": ANSWERS, "delay_s": 30.0})}
    config = config.model_copy(update={"experts": experts})
    count = SkillCount(right=9, wrong=1)
    save_profile(Profile(pool=pool_digest(config), annotator="alpha",
                         experts={n: ExpertProfile(skills={"arithmetic": count}, tasks={"t": count}) for n in experts},
                         aggregators={"alpha": ExpertProfile(tasks={"t": count})}), tmp_path / "profile.json")
    return config


def test_a_router_forecast_to_miss_its_deadline_is_hedged_by_degrade_to(tmp_path: Path) -> None:
    config = hedge_config(tmp_path, deadline_s=3.0, degrade_to="single:alpha")
    with Running(Service(config)) as running:
        running.service.admission.learned["majority:slow+slow2"] = 30.0
        start = time.monotonic()
        reply = post(running, model="majority:slow+slow2")
        took = time.monotonic() - start
        assert reply.status_code == 200, reply.text
        record = reply.json()["symoe"]
        assert record["degraded"] and record["deadline_exceeded"] and record["experts"] == ["alpha"]
        assert "gave no answer by the deadline of 3 s: answered by single:alpha" in record["degraded_why"]
        assert took < 3.0 + 1.0
        assert metric(running, "hedged") == 1 and metric(running, "timed_out") == 1
    off = hedge_config(tmp_path / "off", deadline_s=3.0, degrade_to="single:alpha", hedge=False)
    with Running(Service(off)) as running:
        running.service.admission.learned["majority:slow+slow2"] = 30.0
        assert post(running, model="majority:slow+slow2").status_code == 504
