"""The accuracy rule of a rollout: a candidate judged against the live version on the SAME labelled requests.

While a candidate is loaded, every request with an event id is answered by one slot and scored
in shadow by the other, so once labels arrive each such request is a pair: was live right, was
the candidate right. Only the discordant pairs say which is better; under "equally accurate"
each of them favours either version with probability 1/2, so an exact one-sided binomial (sign)
test on them — McNemar's exact test — says how sure "worse" or "better" is. A candidate is
rolled back only when it is worse with confidence AND by more than ``max_accuracy_drop``: never
for being better than a failing live version, never on a handful of labels.

A regression model is never right or wrong: each pair carries both versions' losses of the task's
metric (``LossPairs``: squared error for RMSE, absolute error for MAE), and a one-sided paired t-test on
(candidate - live) says how sure "worse" or "better" is; ``max_accuracy_drop`` and ``fast_path_margin``
are then relative to live's value (0.02: the candidate's RMSE more than 2 % above live's). Multiclass
pairs are right or wrong as binary ones (the likeliest class).

Example:
    >>> from streamfit.config import RolloutConfig
    >>> cfg = RolloutConfig(min_labels=30)
    >>> judge_pairs(Pairs(n=40, live_only=2, cand_only=18, both=15), cfg).decision  # live is failing
    'better'
    >>> judge_pairs(Pairs(n=12, live_only=0, cand_only=9, both=1), cfg).decision    # too few to say
    'too_few'
    >>> j = judge_pairs(Pairs(n=200, live_only=40, cand_only=10, both=120), cfg)
    >>> j.decision, j.reason.split(":")[0]
    ('worse', 'paired accuracy 0.650 vs live 0.800 on 200 requests both answered')
    >>> lp = pairs_of({"n": 100, "metric": "rmse", "live_value": 1.0, "cand_value": 1.5, "mean_diff": 1.25,
    ...                "sd_diff": 2.0})
    >>> judge_pairs(lp, cfg).reason.split(":")[0]
    'paired rmse 1.500 vs live 1.000 on 100 requests both answered'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Union

from scipy.stats import binom
from scipy.stats import t as student_t

from streamfit.config import RolloutConfig


@dataclass(frozen=True)
class Pairs:
    """Labelled requests both versions answered: how many, and which version was right on each."""

    n: int = 0
    live_only: int = 0  # live right, candidate wrong
    cand_only: int = 0  # candidate right, live wrong
    both: int = 0  # both right

    @property
    def live_acc(self) -> float | None:
        """Live's accuracy on the pairs (None without pairs)."""
        return (self.both + self.live_only) / self.n if self.n else None

    @property
    def cand_acc(self) -> float | None:
        """The candidate's accuracy on the pairs (None without pairs)."""
        return (self.both + self.cand_only) / self.n if self.n else None

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> "Pairs":
        """From the prediction log's plain dict (no pairs when None)."""
        return cls(**{k: int(d.get(k, 0)) for k in ("n", "live_only", "cand_only", "both")}) if d else cls()


@dataclass(frozen=True)
class LossPairs:
    """Labelled requests both versions answered, for regression: each version's ``metric`` on them, and the
    mean and sd of the candidate's per-row loss minus live's (``live_only``/``cand_only``: who was closer)."""

    n: int = 0
    metric: str = "rmse"
    live_value: float | None = None
    cand_value: float | None = None
    mean_diff: float = 0.0
    sd_diff: float = 0.0
    live_only: int = 0
    cand_only: int = 0
    both: int = 0

    def worse_by(self) -> float:
        """How much worse the candidate is, relative to live's value (negative: better)."""
        live, cand = self.live_value or 0.0, self.cand_value or 0.0
        if live > 0:
            return (cand - live) / live
        return 0.0 if cand <= live else math.inf

    def p_values(self) -> tuple[float, float]:
        """One-sided paired t-test p-values that the candidate's loss is above live's, and below it."""
        if self.n < 2:
            return 1.0, 1.0
        if self.sd_diff <= 0:
            return (0.0 if self.mean_diff > 0 else 1.0), (0.0 if self.mean_diff < 0 else 1.0)
        t = self.mean_diff / (self.sd_diff / math.sqrt(self.n))
        return float(student_t.sf(t, self.n - 1)), float(student_t.cdf(t, self.n - 1))


AnyPairs = Union[Pairs, LossPairs]


def pairs_of(d: dict[str, Any] | None) -> AnyPairs:
    """The prediction log's paired figures: ``LossPairs`` when they name a loss metric (regression), else ``Pairs``."""
    if d and d.get("metric") not in (None, "accuracy"):
        return LossPairs(**{k: d[k] for k in LossPairs.__dataclass_fields__ if k in d})
    return Pairs.of(d)


def gain(p: AnyPairs) -> float:
    """How much better the candidate is on the pairs: accuracy points, or live's loss fraction it saves."""
    if isinstance(p, LossPairs):
        return -p.worse_by()
    return (p.cand_acc or 0.0) - (p.live_acc or 0.0)


@dataclass(frozen=True)
class Judgement:
    """``decision``: 'worse', 'better', 'even' (neither with confidence) or 'too_few'; the figures behind it."""

    decision: str
    reason: str
    figures: dict[str, Any]


def sign_test(k: int, n: int) -> float:
    """One-sided exact p-value of ``k`` or more successes in ``n`` fair coin flips (1.0 when n is 0)."""
    return float(binom.sf(k - 1, n, 0.5)) if n else 1.0


def judge_pairs(p: AnyPairs, cfg: RolloutConfig) -> Judgement:
    """The paired verdict: worse with confidence (and by more than ``max_accuracy_drop``), better with
    confidence, even, or too few pairs (fewer than ``min_labels``)."""
    if isinstance(p, LossPairs):
        return judge_losses(p, cfg)
    discordant = p.live_only + p.cand_only
    p_worse, p_better = sign_test(p.live_only, discordant), sign_test(p.cand_only, discordant)
    figures = {**asdict(p), "live_accuracy": p.live_acc, "candidate_accuracy": p.cand_acc,
               "p_worse": p_worse, "p_better": p_better}
    if p.n < max(cfg.min_labels, 1):
        return Judgement("too_few", f"only {p.n} paired labelled requests (wanted {cfg.min_labels})", figures)
    head = f"paired accuracy {p.cand_acc:.3f} vs live {p.live_acc:.3f} on {p.n} requests both answered"
    test = f"{p.live_only} live-only vs {p.cand_only} candidate-only right"
    if p_worse < cfg.decision_p and p.live_acc - p.cand_acc > cfg.max_accuracy_drop:
        return Judgement("worse", f"{head}: worse ({test}, McNemar exact p={p_worse:.1e})", figures)
    if p_better < cfg.decision_p and p.cand_acc > p.live_acc:
        return Judgement("better", f"{head}: better ({test}, McNemar exact p={p_better:.1e})", figures)
    return Judgement("even", f"{head}: not worse with confidence ({test}, p={p_worse:.2f})", figures)


def judge_losses(p: LossPairs, cfg: RolloutConfig) -> Judgement:
    """``judge_pairs`` for regression: a paired t-test on the losses; margins relative to live's value."""
    p_worse, p_better = p.p_values()
    figures = {**asdict(p), "p_worse": p_worse, "p_better": p_better}
    if p.n < max(cfg.min_labels, 1):
        return Judgement("too_few", f"only {p.n} paired labelled requests (wanted {cfg.min_labels})", figures)
    head = f"paired {p.metric} {p.cand_value:.3f} vs live {p.live_value:.3f} on {p.n} requests both answered"
    test = f"{p.live_only} live closer vs {p.cand_only} candidate closer"
    if p_worse < cfg.decision_p and p.worse_by() > cfg.max_accuracy_drop:
        return Judgement("worse", f"{head}: worse ({test}, paired t-test p={p_worse:.1e})", figures)
    if p_better < cfg.decision_p and p.worse_by() < 0:
        return Judgement("better", f"{head}: better ({test}, paired t-test p={p_better:.1e})", figures)
    return Judgement("even", f"{head}: not worse with confidence ({test}, p={p_worse:.2f})", figures)


def fast_path_due(newest: AnyPairs, cfg: RolloutConfig) -> Judgement | None:
    """The judgement that sends a rollout down the fast path: on the newest pairs, live is far below the
    candidate (by ``fast_path_margin``) with confidence; None otherwise."""
    j = judge_pairs(newest, cfg)
    if j.decision != "better" or gain(newest) < cfg.fast_path_margin:
        return None
    return Judgement("fast_path", f"live failing on the newest {newest.n} paired requests: {j.reason}", j.figures)


def unpaired_worse_p(live: tuple[int, float], cand: tuple[int, float]) -> float:
    """One-sided p-value that the candidate's accuracy is below live's, from two separate samples
    (n, accuracy) — Fisher's exact test; used when the two versions answered different requests."""
    from scipy.stats import fisher_exact

    (nl, al), (nc, ac) = live, cand
    kl, kc = round(nl * al), round(nc * ac)
    return float(fisher_exact([[kl, nl - kl], [kc, nc - kc]], alternative="greater")[1])


def unpaired_loss_worse_p(live: tuple[int, float, str, float], cand: tuple[int, float, str, float]) -> float:
    """One-sided p-value that the candidate's mean per-row loss is above live's, from two separate samples
    (n, value, metric, sd of the per-row loss) — Welch's t-test (regression).

    >>> round(unpaired_loss_worse_p((100, 1.0, "mae", 0.5), (100, 1.5, "mae", 0.5)), 6)
    0.0
    """
    from scipy.stats import ttest_ind_from_stats

    (nl, vl, metric, sl), (nc, vc, _, sc) = live, cand
    ml, mc = (vl ** 2, vc ** 2) if metric == "rmse" else (vl, vc)
    if nl < 2 or nc < 2:
        return 1.0
    if sl <= 0 and sc <= 0:
        return 0.0 if mc > ml else 1.0
    return float(ttest_ind_from_stats(mc, sc, nc, ml, sl, nl, equal_var=False, alternative="greater").pvalue)
