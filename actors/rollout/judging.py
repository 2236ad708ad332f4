"""The accuracy rule of a rollout: a candidate judged against the live version on the SAME labelled requests.

While a candidate is loaded, every request with an event id is answered by one slot and scored
in shadow by the other, so once labels arrive each such request is a pair: was live right, was
the candidate right. Only the discordant pairs say which is better; under "equally accurate"
each of them favours either version with probability 1/2, so an exact one-sided binomial (sign)
test on them — McNemar's exact test — says how sure "worse" or "better" is. A candidate is
rolled back only when it is worse with confidence AND by more than ``max_accuracy_drop``: never
for being better than a failing live version, never on a handful of labels.

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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import binom

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
class Judgement:
    """``decision``: 'worse', 'better', 'even' (neither with confidence) or 'too_few'; the figures behind it."""

    decision: str
    reason: str
    figures: dict[str, Any]


def sign_test(k: int, n: int) -> float:
    """One-sided exact p-value of ``k`` or more successes in ``n`` fair coin flips (1.0 when n is 0)."""
    return float(binom.sf(k - 1, n, 0.5)) if n else 1.0


def judge_pairs(p: Pairs, cfg: RolloutConfig) -> Judgement:
    """The paired verdict: worse with confidence (and by more than ``max_accuracy_drop``), better with
    confidence, even, or too few pairs (fewer than ``min_labels``)."""
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


def fast_path_due(newest: Pairs, cfg: RolloutConfig) -> Judgement | None:
    """The judgement that sends a rollout down the fast path: on the newest pairs, live is far below the
    candidate (by ``fast_path_margin``) with confidence; None otherwise."""
    j = judge_pairs(newest, cfg)
    if j.decision != "better" or newest.cand_acc - newest.live_acc < cfg.fast_path_margin:
        return None
    return Judgement("fast_path", f"live failing on the newest {newest.n} paired requests: {j.reason}", j.figures)


def unpaired_worse_p(live: tuple[int, float], cand: tuple[int, float]) -> float:
    """One-sided p-value that the candidate's accuracy is below live's, from two separate samples
    (n, accuracy) — Fisher's exact test; used when the two versions answered different requests."""
    from scipy.stats import fisher_exact

    (nl, al), (nc, ac) = live, cand
    kl, kc = round(nl * al), round(nc * ac)
    return float(fisher_exact([[kl, nl - kl], [kc, nc - kc]], alternative="greater")[1])
