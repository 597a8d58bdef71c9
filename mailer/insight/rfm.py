"""RFM: how recently, how often and how much each customer buys, scored 1-5 against the
other customers, and the named segment those scores put them in.

Scores are quintiles by mid-rank: customers with equal values share a score (a tie never
splits across two scores by the order of the rows), and a lone customer scores 3, the middle,
since there is no one to compare with. A customer with a single order always has F = 1:
however many others also bought once, never coming back is not frequent buying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product

import numpy as np
from numpy.typing import NDArray

from mailer.core.errors import ConfigError, Problem
from mailer.insight.history import Ints, Summary


@dataclass(frozen=True, slots=True)
class Scores:
    """Per customer, aligned with the summary: recency, frequency and monetary scores, 1-5."""

    recency: Ints
    frequency: Ints
    monetary: Ints


def quintiles(values: NDArray[np.float64] | NDArray[np.int64]) -> Ints:
    """1-5 by mid-rank: the share of customers below plus half of those tied, in fifths.
    The mid-ranks are scipy's ``rankdata(method="average")``, from one ``np.unique``:
    importing scipy.stats would cost more than the scoring."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts
    rank = (below + (counts + 1) / 2.0)[inverse.ravel()]
    share = (rank - 0.5) / len(values)
    scored: Ints = np.minimum(1 + np.floor(5 * share), 5).astype(np.int64)
    return scored


def scores(summary: Summary, today: int) -> Scores:
    """R from days since the last order (fewest scores 5), F from the number of purchase
    days, M from total spend."""
    days_since = (today - summary.last_day).astype(np.float64)
    frequency = np.where(summary.orders > 1, quintiles(summary.orders), 1)
    return Scores(quintiles(-days_since), frequency, quintiles(summary.total))


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentRule:
    """A segment and the inclusive score ranges that put a customer in it."""

    name: str
    recency: tuple[int, int] = (1, 5)
    frequency: tuple[int, int] = (1, 5)
    monetary: tuple[int, int] = (1, 5)


def default_rules() -> tuple[SegmentRule, ...]:
    """The rules in order; a customer takes the first that fits.

    - new: bought lately (R 4-5) for the first time (F 1)
    - champions: bought lately, often and for the most (R, F and M 4-5)
    - loyal: buy regularly and have not lapsed (R 3-5, F 3-5)
    - potential: bought fairly lately, a few times (R 3-5, F 1-2)
    - can't lose: were among the best buyers, not seen for long (R 1-2, F and M 4-5)
    - at risk: bought regularly, not seen for long (R 1-2, F 3-5)
    - hibernating: a few orders, a while ago (R 2, F 1-2)
    - lost: a few orders, long ago (R 1, F 1-2)
    """
    return (
        SegmentRule(name="new", recency=(4, 5), frequency=(1, 1)),
        SegmentRule(name="champions", recency=(4, 5), frequency=(4, 5), monetary=(4, 5)),
        SegmentRule(name="loyal", recency=(3, 5), frequency=(3, 5)),
        SegmentRule(name="potential", recency=(3, 5), frequency=(1, 2)),
        SegmentRule(name="can't lose", recency=(1, 2), frequency=(4, 5), monetary=(4, 5)),
        SegmentRule(name="at risk", recency=(1, 2), frequency=(3, 5)),
        SegmentRule(name="hibernating", recency=(2, 2), frequency=(1, 2)),
        SegmentRule(name="lost", recency=(1, 1), frequency=(1, 2)),
    )


def matches(rule: SegmentRule, r: int, f: int, m: int) -> bool:
    ranges = ((rule.recency, r), (rule.frequency, f), (rule.monetary, m))
    return all(low <= score <= high for (low, high), score in ranges)


@dataclass(frozen=True, slots=True)
class SegmentsConfig:
    """The ``[insight] segments`` section: segment rules in order, first match wins. Built
    once and checked then: every range within 1-5, and every one of the 125 score
    combinations falls in some segment, so no customer is left without one."""

    rules: tuple[SegmentRule, ...] = field(default_factory=default_rules)

    def __post_init__(self) -> None:
        where = "[insight] segments"
        problems = [
            Problem(f"{where}.{rule.name}", f"score range {low}-{high} is not within 1-5")
            for rule in self.rules
            for low, high in (rule.recency, rule.frequency, rule.monetary)
            if not 1 <= low <= high <= 5
        ]
        missed = [
            combo
            for combo in product(range(1, 6), repeat=3)
            if not any(matches(rule, *combo) for rule in self.rules)
        ]
        if missed:
            r, f, m = missed[0]
            problems.append(
                Problem(
                    where, f"{len(missed)} score combinations fit no segment, e.g. R{r} F{f} M{m}"
                )
            )
        if problems:
            raise ConfigError(problems)

    def table(self) -> NDArray[np.int64]:
        """The segment index for every (R, F, M), so segmenting is one array lookup."""
        return _table(self.rules)


@lru_cache(maxsize=16)  # built once per set of rules: an update of one customer needs it too
def _table(rules: tuple[SegmentRule, ...]) -> NDArray[np.int64]:
    lookup = np.zeros((6, 6, 6), dtype=np.int64)
    for r, f, m in product(range(1, 6), repeat=3):
        lookup[r, f, m] = next(i for i, rule in enumerate(rules) if matches(rule, r, f, m))
    lookup.flags.writeable = False
    return lookup


def segments(rfm: Scores, config: SegmentsConfig) -> NDArray[np.str_]:
    """Each customer's segment name."""
    names = np.array([rule.name for rule in config.rules])
    return names[config.table()[rfm.recency, rfm.frequency, rfm.monetary]]
