"""A ranking from the Compare tab's votes: Bradley-Terry strengths with bootstrap intervals.

Each vote in ``runs/votes.jsonl`` compares the two leftmost models of a comparison: "left" or
"right" is a win, "tie" and "both_bad" count as half a win each (as arena leaderboards treat
ties). The Bradley-Terry model says P(i beats j) = p_i / (p_i + p_j); its maximum-likelihood
strengths come from the classic minorisation-maximisation update (Hunter 2004):

    p_i <- W_i / sum_j n_ij / (p_i + p_j)

with W_i the wins of i and n_ij the games between i and j. Scores are shown on the Elo scale,
400 * log10(p_i) + 1000 (a model twice as strong is
120 points up). A model that never loses (or never wins) has no finite strength; a small
prior, ``prior`` games of 1/2 - 1/2 against a virtual average model, keeps every strength
finite and anchors the scale at 1000 (set it to 0 for the pure maximum-likelihood fit,
scaled so that the geometric mean of the strengths is 1). The 95% intervals are percentiles of
the fit over ``rounds`` bootstrap resamples of the votes.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

ELO_SCALE, ELO_BASE = 400.0, 1000.0
SCORE = {"left": (1.0, 0.0), "right": (0.0, 1.0), "tie": (0.5, 0.5), "both_bad": (0.5, 0.5)}


@dataclass
class Rank:
    model: str
    rating: float
    low: float
    high: float
    votes: int
    wins: int
    losses: int
    ties: int


def games(votes: list[dict]) -> list[tuple[str, str, float]]:
    """(left, right, left's score) per usable vote; votes of a model against itself are dropped."""
    out = []
    for vote in votes:
        left, right, choice = vote.get("left"), vote.get("right"), vote.get("vote")
        if left and right and left != right and choice in SCORE:
            out.append((left, right, SCORE[choice][0]))
    return out


def bradley_terry(matches: list[tuple[str, str, float]], prior: float = 1.0, iterations: int = 500,
                  tol: float = 1e-10) -> dict[str, float]:
    """Strengths p_i by the MM update. With ``prior`` > 0 each model also plays ``prior`` virtual games
    (half won) against an average model of strength 1, which anchors the scale; with 0 the
    strengths are scaled to a geometric mean of 1."""
    models = sorted({m for a, b, _ in matches for m in (a, b)})
    wins: dict[str, float] = defaultdict(float)
    pairs: dict[tuple[str, str], float] = defaultdict(float)
    for a, b, s in matches:
        wins[a] += s
        wins[b] += 1.0 - s
        pairs[(a, b)] += 1.0
        pairs[(b, a)] += 1.0
    strength = dict.fromkeys(models, 1.0)
    for _ in range(iterations):
        new = {}
        for i in models:
            denom = sum(n / (strength[i] + strength[j]) for (a, j), n in pairs.items() if a == i)
            denom += prior / (strength[i] + 1.0)  # the virtual opponent of strength 1
            # floor: without a prior, a model that never wins would reach 0 (rating minus infinity)
            new[i] = max((wins[i] + prior / 2) / denom, 1e-9) if denom > 0 else strength[i]
        if prior == 0 and new:  # the pure fit is defined up to a scale: pin its geometric mean to 1
            scale = math.exp(sum(math.log(v) for v in new.values()) / len(new))
            new = {k: v / scale for k, v in new.items()}
        change = max((abs(new[k] - strength[k]) for k in models), default=0.0)
        strength = new
        if change < tol:
            break
    return strength


def to_elo(strength: float) -> float:
    return ELO_SCALE * math.log10(strength) + ELO_BASE


def rank(votes: list[dict], rounds: int = 200, seed: int = 0, prior: float = 1.0) -> list[Rank]:
    """Models by rating, best first, with 95% bootstrap intervals and their vote counts."""
    matches = games(votes)
    if not matches:
        return []
    fit = bradley_terry(matches, prior)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        resample = [matches[rng.randrange(len(matches))] for _ in matches]
        for model, p in bradley_terry(resample, prior, iterations=200, tol=1e-8).items():
            samples[model].append(to_elo(p))
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # votes, wins, losses, ties
    for a, b, s in matches:
        for model, score in ((a, s), (b, 1.0 - s)):
            t = tallies[model]
            t[0] += 1
            t[1 if score == 1.0 else 2 if score == 0.0 else 3] += 1
    out = []
    for model, p in fit.items():
        got = sorted(samples[model]) or [to_elo(p)]
        low, high = got[int(0.025 * (len(got) - 1))], got[int(math.ceil(0.975 * (len(got) - 1)))]
        out.append(Rank(model, to_elo(p), low, high, *tallies[model]))
    return sorted(out, key=lambda r: (-r.rating, r.model))


RANK_HEADERS = ["model", "rating (Bradley-Terry, Elo scale)", "95% interval", "votes", "wins", "losses",
                "ties / both bad"]


def rank_rows(ranks: list[Rank]) -> list[list]:
    """Table rows for the app (``RANK_HEADERS``)."""
    return [[r.model, round(r.rating), f"{r.low:.0f} to {r.high:.0f}", r.votes, r.wins, r.losses, r.ties]
            for r in ranks]
