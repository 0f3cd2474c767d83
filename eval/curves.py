"""Cost/quality curves of a router swept over its knob, summarised as the field summarises them.

A *family* is one router run at several settings of its knob (``--sweep learned.cost_weight=...``
makes ``learned:mlp[learned.cost_weight=0]``, ``learned:mlp[learned.cost_weight=0.5]``, ...;
``budget[budget.quality=...]`` likewise); each setting is a point: accuracy (%), cost per question
and, in a two-expert pool, the share of questions sent to the strong expert.

* **APGR** and **CPT(50%)** (RouteLLM, Ong et al. 2024), for a pool of two single experts: the
  *strong* one is the more accurate on the scored questions, the *weak* one the other. A point's
  performance gap recovered is ``PGR = (acc - acc_weak) / (acc_strong - acc_weak)``; the curve is
  PGR against the share of strong calls, through (0, 0) (all weak) and (1, 1) (all strong),
  linear between points. APGR is its area over shares 0..1 (a random router scores 0.5);
  CPT(50%) is the smallest share of strong calls at which the curve reaches PGR 0.5.
* **AIQ** (RouterBench, Hu et al. 2024), for a pool whose experts' costs differ: the family's
  points plus the cheapest single expert (every knob's cheapest end) make a non-decreasing upper
  convex hull of accuracy over cost; AIQ is its mean over the cost range of the pool's single
  experts, ``[c_min, c_max]`` (cheapest to dearest single expert), flat beyond its dearest point.
  Cost is USD per question where every sample records it, else prompt + completion tokens per
  question. ``aiq_zero`` is the same for the zero router (RouterBench's baseline: the hull of
  the single experts alone, i.e. mixing them at random); a router earns its keep above it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the runner imports this module to summarise a run
    from eval.runner import SampleResult

Point = tuple[float, float]


def family_of(method: str) -> str:
    """The router a method name runs, without its bracketed settings."""
    return method.partition("[")[0]


def upper_hull(points: list[Point]) -> list[Point]:
    """The non-decreasing upper convex hull of (cost, accuracy) points, by cost."""
    hull: list[Point] = []
    for p in sorted(set(points)):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(p)
    best = -np.inf
    rising = []
    for c, a in hull:  # spending more never needs to lose accuracy: keep the best so far
        if a > best:
            rising.append((c, a))
            best = a
    return rising


def aiq(points: list[Point], low: float, high: float) -> float | None:
    """Mean of the hull of ``points`` over costs ``low..high`` (None for an empty range)."""
    if high <= low or not points:
        return None
    hull = upper_hull(points)
    grid = np.linspace(low, high, 2001)
    xs, ys = np.array([c for c, _ in hull]), np.array([a for _, a in hull])
    curve = np.interp(grid, xs, ys, left=np.nan, right=ys[-1])
    curve = np.nan_to_num(curve, nan=0.0)  # below the family's cheapest point it reaches nothing
    return float(np.trapezoid(curve, grid) / (high - low))


def pgr_curve(shares: list[float], accuracies: list[float], weak: float, strong: float) -> list[Point]:
    """(share of strong calls, PGR) through (0, 0) and (1, 1), by share."""
    gap = strong - weak
    return sorted({(0.0, 0.0), (1.0, 1.0), *((s, (a - weak) / gap) for s, a in zip(shares, accuracies, strict=True))})


def apgr(curve: list[Point]) -> float:
    xs, ys = np.array([x for x, _ in curve]), np.array([y for _, y in curve])
    return float(np.trapezoid(ys, xs))


def cpt(curve: list[Point], target: float = 0.5) -> float | None:
    """The smallest share of strong calls at which the curve reaches ``target`` PGR."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if y0 >= target:
            return x0
        if y1 >= target:
            return x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return None


def curves(samples: list[SampleResult]) -> dict[str, dict[str, Any]]:
    """Every swept family's points and APGR / CPT(50%) (two single experts) and AIQ."""
    by_method: dict[str, list[SampleResult]] = defaultdict(list)
    for s in samples:
        by_method[s.method].append(s)
    usd = all(s.cost_usd is not None for s in samples)

    def cost(rows: list[SampleResult]) -> float:
        spent = sum(s.cost_usd or 0.0 for s in rows) if usd else sum(s.usage.total_tokens for s in rows)
        return spent / len(rows)

    def accuracy(rows: list[SampleResult]) -> float:
        return 100.0 * sum(s.correct for s in rows) / len(rows)

    singles = {m.removeprefix("single:"): (cost(r), accuracy(r))
               for m, r in by_method.items() if m.startswith("single:")}
    members: dict[str, list[str]] = defaultdict(list)
    for m in by_method:
        members[family_of(m)].append(m)
    swept = {f: ms for f, ms in members.items() if len(ms) >= 2 and any("[" in m for m in ms)}
    if not swept or not singles:
        return {}
    low, high = min(c for c, _ in singles.values()), max(c for c, _ in singles.values())
    cheapest = min(singles.values())
    pair = sorted(singles, key=lambda e: singles[e][1]) if len(singles) == 2 else None
    out: dict[str, dict[str, Any]] = {}
    for family, ms in swept.items():
        points = [{"method": m, "cost": round(cost(by_method[m]), 6), "accuracy": round(accuracy(by_method[m]), 2)}
                  for m in ms]
        entry: dict[str, Any] = {"cost": "USD per question" if usd else "tokens per question", "points": points}
        if high > low:
            entry["aiq"] = round(aiq([(p["cost"], p["accuracy"]) for p in points] + [cheapest], low, high) or 0.0, 2)
            entry["aiq_zero"] = round(aiq(list(singles.values()), low, high) or 0.0, 2)
            entry["aiq_range"] = [round(low, 6), round(high, 6)]
        if pair and singles[pair[1]][1] > singles[pair[0]][1]:
            weak, strong = pair
            for p in points:
                rows = by_method[p["method"]]
                p["strong_share"] = round(sum(strong in s.experts for s in rows) / len(rows), 4)
            curve = pgr_curve([p["strong_share"] for p in points], [p["accuracy"] for p in points],
                              singles[weak][1], singles[strong][1])
            found = cpt(curve)
            entry.update({"strong": strong, "weak": weak, "apgr": round(apgr(curve), 3),
                          "cpt50": None if found is None else round(100 * found, 1)})
        out[family] = entry
    return out


def curves_table(found: dict[str, dict[str, Any]]) -> str:
    """The families as a markdown table (empty when nothing was swept)."""
    if not found:
        return ""
    lines = ["| router | settings | APGR | CPT(50%) | AIQ | AIQ of the zero router |", "|---|---|---|---|---|---|"]
    for family, e in found.items():
        cpt50 = f"{e['cpt50']:.1f}% strong calls" if e.get("cpt50") is not None else "-"
        lines.append(f"| {family} | {len(e['points'])} | {e.get('apgr', '-')} | {cpt50 if 'apgr' in e else '-'} | "
                     f"{e.get('aiq', '-')} | {e.get('aiq_zero', '-')} |")
    first = next(iter(found.values()))
    return ("\n".join(lines) + "\n\nAPGR, CPT(50%): RouteLLM's, over the share of questions sent to the stronger of "
            "two single experts (a random router: APGR 0.5). AIQ: RouterBench's mean accuracy (%) of the router's "
            "non-decreasing upper convex hull over the single experts' cost range, cost in "
            f"{first['cost']}; the zero router mixes single experts at random.\n")
