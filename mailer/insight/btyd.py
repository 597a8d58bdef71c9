"""How many more purchases a customer will make and what they will be worth.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive, a
customer buys at a Poisson rate drawn from Gamma(r, alpha); after each purchase they drop
out with a probability drawn from Beta(a, b). Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM
and CLV"; Fader & Hardie 2013 note): a customer's purchase amounts vary around their own
mean, which varies across customers; spend is independent of how often they buy.

Both are fitted by maximum likelihood on log-parameters (so every parameter stays positive)
over arrays of all customers at once; customers with the same (x, t_x, T) are counted once
with a weight, so a refresh of 100,000 customers costs a few thousand likelihood terms.
Frequency is repeat purchases, recency the time from first to last purchase, age the time
from first purchase to now, all in one unit (days in mailer; alpha and gamma carry it).

scipy is imported by the functions that use it: it takes most of a command's start, and
only a refresh of the insights needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from mailer.core.errors import FitFailed
from mailer.insight.history import Floats

LOG_BOUND = 12.0  # parameters between e^-12 and e^12; one at the edge did not converge
# where the Gamma-Gamma fit starts, (p, q, w): both shapes moderate, and both large (near
# the point masses), as a few customers can give a likelihood with a peak on either side
STARTS = (np.log([1.0, 2.0, 0.5]), np.log([150.0, 150.0, 1.0]))
POINT_MASS = 3.0  # shapes above e^9: a Beta or Gamma narrowed to one value for everybody


@dataclass(frozen=True, slots=True, kw_only=True)
class BgNbd:
    """Purchase rate ~ Gamma(r, alpha); drop-out probability ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Spend per purchase ~ Gamma(p, nu), nu ~ Gamma(q, gamma): the mean spend across
    customers is p*gamma/(q-1)."""

    p: float
    q: float
    gamma: float


def as_floats(values: ArrayLike) -> Floats:
    return np.asarray(values, dtype=np.float64)


def checked(frequency: ArrayLike, recency: ArrayLike, age: ArrayLike) -> tuple[Floats, ...]:
    """(x, t_x, T) as float arrays, or a one-line error saying what is wrong and how often."""
    x, t_x, big_t = as_floats(frequency), as_floats(recency), as_floats(age)
    if not x.shape == t_x.shape == big_t.shape:
        raise ValueError("frequency, recency and age must have one value per customer each")
    wrong = {
        "negative frequency": x < 0,
        "recency after age": t_x > big_t,
        "negative recency": t_x < 0,
        "repeat purchases with zero recency": (x > 0) & (t_x <= 0),
        "not finite": ~(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(big_t)),
    }
    problems = [
        f"{int(bad.sum())} customers with {what}" for what, bad in wrong.items() if bad.any()
    ]
    if problems:
        raise ValueError("purchase summary: " + "; ".join(problems))
    return x, t_x, big_t


def maximise(
    name: str,
    log_likelihood: Callable[[Floats], float],
    start: Floats,
    limits: tuple[tuple[int, ...], ...] = (),
) -> list[float]:
    """The parameters (not their logs) that maximise a log-likelihood of log-parameters.

    ``limits`` names groups of parameters whose growing without end, a whole group
    together, is a real answer: a Beta(a, b) narrowing to one drop-out chance a/(a+b), or
    a Gamma-Gamma shape going to a point mass with the mean spend pinned. Reaching the edge
    that way is accepted, not refused.

    L-BFGS-B reads slopes by finite differences; where the likelihood is as narrow as a
    point mass (spend that hardly varies at all), its line search can stop short of
    settling. A simplex search (Nelder-Mead), which reads no slopes, then finishes from
    where it stopped; as a simplex halts short of an edge where the likelihood is flat, a
    parameter it leaves within e^1 of one counts as at the edge."""
    from scipy.optimize import minimize

    def loss(theta: Floats) -> float:
        return -log_likelihood(theta)

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    result = minimize(loss, start, method="L-BFGS-B", bounds=bounds)
    near = 0.01
    if not result.success:
        stopped = result.message.strip(": ")
        result = minimize(
            loss, result.x, method="Nelder-Mead", bounds=bounds, options={"maxfev": 4000}
        )
        result.message, near = stopped, 1.0
    if not result.success or not np.isfinite(result.fun):
        raise FitFailed(f"{name} fit did not converge (the optimiser stopped: {result.message})")
    at_edge = np.abs(result.x) > LOG_BOUND - near
    for group in limits:
        if np.all(result.x[list(group)] > LOG_BOUND - POINT_MASS):
            at_edge[list(group)] = False
    if np.any(at_edge):
        raise FitFailed(
            f"{name} fit ran to the edge of its range (log-parameters {np.round(result.x, 1)}):"
            " the purchase history does not pin the model down"
        )
    return [float(value) for value in np.exp(result.x)]


def bgnbd_log_likelihood(model: BgNbd, x: Floats, t_x: Floats, big_t: Floats) -> Floats:
    """Each customer's log-likelihood, in the paper's closed form: A1 + A2 + ln(e^A3 + e^A4),
    where A4 (dropping out right after the last purchase) exists only for x > 0."""
    from scipy.special import gammaln

    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + big_t)
    repeat = x > 0
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    result: Floats = a1 + a2 + np.logaddexp(a3, a4)
    return result


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, age: ArrayLike) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters for these customers."""
    x, t_x, big_t = checked(frequency, recency, age)
    if not np.any(x > 0):
        raise FitFailed("BG/NBD fit needs customers with repeat purchases; there are none yet")
    rows, weight = np.unique(np.stack([x, t_x, big_t]), axis=1, return_counts=True)
    ux, ut, uT = rows
    total = int(weight.sum())

    def log_likelihood(theta: Floats) -> float:
        model = BgNbd(r=theta[0], alpha=theta[1], a=theta[2], b=theta[3])
        return float(weight @ bgnbd_log_likelihood(model, ux, ut, uT)) / total

    rate = x.sum() / max(big_t.sum(), 1e-9)
    start = np.log([1.0, 1.0 / max(rate, 1e-5), 1.0, 1.0])
    r, alpha, a, b = maximise(
        "BG/NBD", lambda t: log_likelihood(np.exp(t)), start, limits=((2, 3),)
    )
    return BgNbd(r=r, alpha=alpha, a=a, b=b)


def p_alive(model: BgNbd, frequency: ArrayLike, recency: ArrayLike, age: ArrayLike) -> Floats:
    """The probability each customer has not dropped out. 1 for customers with no repeat
    purchase: in BG/NBD a customer can only drop out right after a purchase."""
    from scipy.special import expit

    x, t_x, big_t = checked(frequency, recency, age)
    log_odds = (
        np.log(model.a)
        - np.log(np.maximum(model.b + x - 1, 1e-300))
        + (model.r + x) * (np.log(model.alpha + big_t) - np.log(model.alpha + t_x))
    )
    alive: Floats = np.where(x > 0, expit(-log_odds), 1.0)
    return alive


def expected_purchases(
    model: BgNbd, horizon: float | Floats, frequency: ArrayLike, recency: ArrayLike, age: ArrayLike
) -> Floats:
    """Each customer's expected number of purchases in the next ``horizon`` (a column of
    horizons gives a row of customers for each).

    The paper's conditional expectation with its hypergeometric term rewritten by Euler's
    transformation, 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1-r-x) 2F1(a+b-1-r, a-1; a+b+x-1; z),
    so the large powers of (alpha+T)/(alpha+T+t) cancel and 2F1's first parameters stay
    small however many purchases a customer made.
    """
    from scipy.special import hyp2f1

    x, t_x, big_t = checked(frequency, recency, age)
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    z = horizon / (alpha + big_t + horizon)
    alive = p_alive(model, x, t_x, big_t)
    with np.errstate(invalid="ignore", over="ignore"):
        hyper = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        expected: Floats = (a + b + x - 1) / (a - 1) * (1 - hyper) * alive
    if np.all(np.isfinite(expected)):
        return expected
    # a and b so large that the terms above overflow: hardly anyone drops out, and the drop-out
    # probability is p = a/(a+b) for all. Then 2F1 -> (1 - (1-p)z)^-(r+x) and the whole
    # expectation -> (1 - ((alpha+T)/(alpha+T+p*t))^(r+x)) / p, finite as p -> 0.
    p = a / (a + b)
    steady: Floats = -np.expm1(-(r + x) * np.log1p(p * horizon / (alpha + big_t))) / p * alive
    return np.where(np.isfinite(expected), expected, steady)


def population_purchases(model: BgNbd, horizon: float) -> float:
    """The expected purchases in ``horizon`` of a customer just acquired (E[X(t)])."""
    return float(expected_purchases(model, horizon, [0.0], [0.0], [0.0])[0])


def wait_quantile(model: BgNbd, frequency: ArrayLike, age: ArrayLike, share: float) -> Floats:
    """The time from now within which a customer who is still alive makes their next
    purchase with probability ``share``. Their rate is Gamma(r+x, alpha+T) given their
    history, so the wait is Lomax: P(wait > w) = ((alpha+T)/(alpha+T+w))^(r+x)."""
    x, big_t = as_floats(frequency), as_floats(age)
    wait: Floats = (model.alpha + big_t) * np.expm1(-np.log1p(-share) / (model.r + x))
    return wait


def gamma_gamma_log_likelihood(model: GammaGamma, x: Floats, mean: Floats) -> Floats:
    """Each repeat customer's log-density of their mean spend over x purchases.

    The density is a beta prime's; it is written here around its mode, with Stirling's
    remainders and log1p(e) - e, so every term stays small and exact to rounding however
    large p and q grow (a point mass: each customer spending the same every time, or all
    customers alike). The textbook form subtracts numbers near q*log(q) from each other,
    and its rounding noise swamps the slope an optimiser reads as a fit nears those limits.
    """
    p, q = model.p, model.q
    w = p * model.gamma / q  # the mean spend as q grows (q*w/(q-1) in general)
    a = p * x
    beside = q * w / p + x * mean  # gamma + the customer's total spend
    gap = mean - w
    log_ratio = np.log1p(a / q) - np.log(w + a * mean / q)  # log((q + a)/(q*w + a*mean))
    result: Floats = (
        0.5 * (np.log(a) - np.log1p(a / q) - np.log(2 * np.pi))  # log(a*q/(a+q)/(2*pi))/2
        + stirling_remainder(a + q)
        - stirling_remainder(a)
        - stirling_remainder(q)
        + a * log1p_minus(q * gap / (p * beside), np.log(mean) + log_ratio)
        + q * log1p_minus(-x * gap / beside, np.log(w) + log_ratio)
        - np.log(mean)
    )
    return result


def stirling_remainder(z: Floats | float) -> Floats:
    """log(Gamma(z)) less Stirling's approximation (z - 1/2)*log(z) - z + log(2*pi)/2: about
    1/(12z), taken from its series where z is large enough for four terms to be exact to
    rounding (z >= 10), and directly below that, where nothing large cancels."""
    from scipy.special import gammaln

    z = np.asarray(z, dtype=np.float64)
    large = np.maximum(z, 10.0)
    series = 1 / (12 * large) - 1 / (360 * large**3) + 1 / (1260 * large**5) - 1 / (1680 * large**7)
    small = np.minimum(z, 10.0)
    direct = gammaln(small) - (small - 0.5) * np.log(small) + small - 0.5 * np.log(2 * np.pi)
    result: Floats = np.where(z >= 10.0, series, direct)
    return result


def log1p_minus(e: Floats, log_one_plus: Floats) -> Floats:
    """log(1 + e) - e, near -e^2/2 for small e, so log1p keeps it exact enough to be
    multiplied by a large shape; ``log_one_plus`` is log(1 + e) from the quantities e
    came from, used where e is near -1 (a spend far below the mean) and 1 + e has lost
    its digits."""
    result: Floats = np.where(e > -0.5, np.log1p(np.maximum(e, -0.5)), log_one_plus) - e
    return result


def fit_gamma_gamma(frequency: ArrayLike, mean_value: ArrayLike) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters from the customers with repeat purchases
    (their number of repeat purchases and the mean value of those). Repeat purchases that
    were all free (a mean of 0) have no place in a gamma density and are left out.

    The model scales with the currency's unit (gamma carries it), so it is fitted to spend
    divided by its mean and gamma scaled back: the same fit for cents, yen or rupiah. It is
    fitted as (p, q, w = p*gamma/q), so that p or q growing without end (each customer
    always spending the same; all customers spending alike) leaves w, the mean, pinned: both
    are answers. When every repeat buyer's mean is the same, the customers are alike and
    everybody is expected to spend that one value."""
    x, mean = as_floats(frequency), as_floats(mean_value)
    if not np.all(np.isfinite(mean)):
        raise ValueError(f"{int(np.sum(~np.isfinite(mean)))} customers have no finite mean spend")
    paid = (x > 0) & (mean > 0)
    x, mean = x[paid], mean[paid]
    if len(x) < 2:
        raise FitFailed("Gamma-Gamma fit needs at least two customers with paid repeat purchases")
    unit = float(np.mean(mean))
    if np.ptp(mean) <= 1e-12 * unit:  # no spread at all: the likelihood grows without end
        p, q, w = 1.0, float(np.exp(LOG_BOUND)), 1.0
    else:
        p, q, w = _fit_relative(x, mean / unit)
    if q <= 1:
        raise FitFailed(
            f"Gamma-Gamma fit gives q = {q:.2f} <= 1: spend varies too wildly between "
            "customers for a mean to exist"
        )
    edge = np.exp(LOG_BOUND - 1)
    if q > edge:  # customers alike, the limit: w is everybody's mean spend
        p = p if p < edge else 1.0  # both at the edge: the weights are the edge's, not data's
        return GammaGamma(p, q, w * (q - 1) / p * unit)
    return GammaGamma(p, q, q * w / p * unit)


def _fit_relative(x: Floats, relative: Floats) -> list[float]:
    """(p, q, w) for spend in units of its mean: the best of the fits from each start."""

    def log_likelihood(theta: Floats) -> float:
        p, q, w = np.exp(theta)
        return float(gamma_gamma_log_likelihood(GammaGamma(p, q, q * w / p), x, relative).mean())

    fits, failure = [], None
    for start in STARTS:
        try:
            fits.append(maximise("Gamma-Gamma", log_likelihood, start, limits=((0,), (1,))))
        except FitFailed as exc:
            failure = exc
    if failure is not None and not fits:
        raise failure
    return max(fits, key=lambda fit: log_likelihood(np.log(fit)))


def expected_value(model: GammaGamma, frequency: ArrayLike, mean_value: ArrayLike) -> Floats:
    """Each customer's expected spend per purchase: a weighted mean of the population mean
    and their own, their own weighing more the more purchases it rests on. Customers with
    no repeat purchase get the population mean."""
    x, mean = as_floats(frequency), as_floats(mean_value)
    p, q, gamma = model.p, model.q, model.gamma
    value: Floats = p * (gamma + x * np.where(x > 0, mean, 0.0)) / (p * x + q - 1)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Horizon:
    """How far to look ahead, in how many steps, discounted per step (0.01 is 1% a step),
    counting this share of each purchase as margin."""

    length: float
    steps: int = 12
    discount: float = 0.0
    margin: float = 1.0


def clv(
    purchases: BgNbd,
    values: GammaGamma,
    *,
    frequency: ArrayLike,
    recency: ArrayLike,
    age: ArrayLike,
    mean_value: ArrayLike,
    horizon: Horizon,
) -> Floats:
    """Each customer's value over the horizon: expected purchases in each step times the
    expected value per purchase, times the margin, each step discounted."""
    ends = horizon.length * np.arange(1, horizon.steps + 1) / horizon.steps
    cumulative = expected_purchases(purchases, ends[:, np.newaxis], frequency, recency, age)
    per_step = np.diff(cumulative, axis=0, prepend=0.0)
    discounts = (1 + horizon.discount) ** -np.arange(1, horizon.steps + 1)
    worth: Floats = (
        horizon.margin * expected_value(values, frequency, mean_value) * (discounts @ per_step)
    )
    return worth
