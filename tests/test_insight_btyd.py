"""BG/NBD and Gamma-Gamma: fitted to purchase histories drawn from known parameters, they
find those parameters again, and their predictions behave as the papers say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import hyp2f1

from mailer.core.errors import FitFailed
from mailer.insight.btyd import (
    BgNbd,
    GammaGamma,
    Horizon,
    clv,
    expected_purchases,
    expected_value,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
    population_purchases,
)
from mailer.insight.history import summarise
from mailer.insight.simulate import simulate

# the published CDNOW values, in days
CDNOW = BgNbd(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
SPEND = GammaGamma(6.25, 3.74, 15.44)


def test_bgnbd_fit_recovers_the_parameters_its_data_came_from() -> None:
    truth = BgNbd(r=0.6, alpha=40.0, a=0.7, b=2.5)
    rng = np.random.default_rng(7)
    orders = simulate(truth, SPEND, first_day=rng.integers(0, 90, 4000), until=450, rng=rng)
    summary = summarise(orders, 450)
    fitted = fit_bgnbd(summary.frequency, summary.recency, summary.age)
    assert fitted.r == pytest.approx(truth.r, rel=0.15)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.2)
    assert fitted.a == pytest.approx(truth.a, rel=0.25)
    assert fitted.b == pytest.approx(truth.b, rel=0.35)


def test_gamma_gamma_fit_recovers_the_parameters_its_data_came_from() -> None:
    rng = np.random.default_rng(11)
    repeat = rng.integers(1, 12, 3000)
    scale = 1 / rng.gamma(SPEND.q, 1 / SPEND.gamma, 3000)
    mean = rng.gamma(SPEND.p * repeat, scale / repeat)
    fitted = fit_gamma_gamma(repeat, mean)
    assert fitted.p == pytest.approx(SPEND.p, rel=0.15)
    assert fitted.q == pytest.approx(SPEND.q, rel=0.15)
    assert fitted.gamma == pytest.approx(SPEND.gamma, rel=0.25)


@pytest.mark.parametrize("unit", [0.01, 1, 100, 10_000])
def test_gamma_gamma_fits_the_same_mean_spend_in_any_currency_unit_and_customer_order(
    unit: float,
) -> None:
    """Customers who all spend around one mean (q growing without end, a real answer) in
    cents, yen or rupiah: every order of the customers gives the same mean spend, where the
    fit used to run to the edge and leave the shop without lifetime values."""
    rng = np.random.default_rng(12)
    repeat = rng.integers(1, 8, 40)
    mean = rng.gamma(6.0 * repeat, 35.0 / 6.0 / repeat) * unit  # one mean: 35 a purchase
    fitted = []
    for _ in range(10):
        order = rng.permutation(len(repeat))
        model = fit_gamma_gamma(repeat[order], mean[order])
        fitted.append(model.p * model.gamma / (model.q - 1) / unit)
    assert fitted == pytest.approx([fitted[0]] * len(fitted), rel=1e-4)
    assert fitted[0] == pytest.approx(np.mean(mean) / unit, rel=0.05)


def test_one_price_for_everybody_is_the_value_expected_of_everybody() -> None:
    """A shop selling one subscription box: no spread to fit, and every customer, new,
    repeat, or later buying something else, is expected to spend its price."""
    model = fit_gamma_gamma([1, 4, 0, 9], [1999.0, 1999.0, 0.0, 1999.0])
    values = expected_value(model, [0, 1, 4, 30], [0, 1999.0, 1999.0, 999.0])
    assert values == pytest.approx([1999.0] * 4, rel=1e-3)


@pytest.mark.parametrize(
    "spend",
    [[35.0, 35.000035, 35.0, 35.0], [1999.0] * 9 + [1998.0], [10.0, 12.0]],
    ids=["a millionth apart", "one discount", "two customers"],
)
def test_spend_that_hardly_varies_still_gives_its_mean(spend: list[float]) -> None:
    """Spend almost the same every time for everybody: the likelihood is then as narrow
    as a point mass, where a fit used to stop short or run to the edge."""
    repeat = [1, 2, 3, 4] * 3
    model = fit_gamma_gamma(repeat[: len(spend)], spend)
    bought = np.average(spend, weights=repeat[: len(spend)])  # a mean over all repeat purchases
    assert model.p * model.gamma / (model.q - 1) == pytest.approx(bought, rel=1e-3)


def test_a_customer_without_repeat_purchases_is_alive_and_one_who_went_quiet_fades() -> None:
    alive = p_alive(CDNOW, [0, 0, 5, 5, 5], [0, 0, 100, 100, 100], [10, 500, 100, 200, 400])
    assert list(alive[:2]) == [1.0, 1.0]  # in BG/NBD one drops out only after a purchase
    assert 1.0 > alive[2] > alive[3] > alive[4] > 0.0


def test_expected_purchases_match_the_papers_formula() -> None:
    r, alpha, a, b = CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b
    x, t_x, big_t, t = 3.0, 150.0, 270.0, 273.0
    paper = (
        (a + b + x - 1)
        / (a - 1)
        * (
            1
            - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
            * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + big_t + t))
        )
        / (1 + a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))
    )
    assert expected_purchases(CDNOW, t, [x], [t_x], [big_t])[0] == pytest.approx(paper)
    new = (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    )
    assert population_purchases(CDNOW, t) == pytest.approx(new)


def test_predictions_stay_finite_for_very_frequent_and_very_old_customers() -> None:
    x, t_x, big_t = [0, 1, 10_000, 10_000], [0, 5, 3000, 3000], [1e6, 3000, 3000, 3001]
    expected = expected_purchases(CDNOW, 365, x, t_x, big_t)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    assert expected[2] > 1000  # buys several times a day and still does
    values = expected_value(SPEND, x, [0, 20, 35, 35])
    assert values[0] == pytest.approx(SPEND.p * SPEND.gamma / (SPEND.q - 1))
    assert values[2] == pytest.approx(35, rel=0.01)


def test_a_fit_where_hardly_anyone_drops_out_still_predicts() -> None:
    """Fitted a and b can be huge when customers almost never leave; the paper's terms then
    overflow, and the prediction is their finite limit, which meets the exact value where
    both can be computed."""
    history = ([0, 3, 10], [0, 50, 200], [100, 100, 300])
    huge = expected_purchases(BgNbd(r=0.5, alpha=10.0, a=1e7, b=1e9), 90, *history)
    large = expected_purchases(BgNbd(r=0.5, alpha=10.0, a=2e3, b=2e5), 90, *history)
    assert np.all(np.isfinite(huge)) and huge == pytest.approx(large, rel=1e-3)
    assert huge[0] == pytest.approx(0.5 / 110 * 90, rel=0.01)  # a new customer: r/(alpha+T)*t


def test_a_shop_whose_customers_all_leave_alike_gets_a_model() -> None:
    """Thirty-odd customers who each bought every 20 days, one to five times, then stopped
    months ago: the likelihood keeps growing as a and b grow together, so the fit reaches
    its edge with their ratio pinned. That is one drop-out chance for everybody, a real
    answer, not a failure."""
    frequency = np.array(
        [
            3,
            4,
            2,
            0,
            3,
            2,
            3,
            4,
            2,
            4,
            2,
            1,
            1,
            4,
            0,
            1,
            2,
            4,
            2,
            0,
            2,
            0,
            3,
            1,
            0,
            1,
            3,
            0,
            1,
            4,
            3,
            0,
            3,
        ]
    )
    recency = np.array(
        [
            184,
            80,
            40,
            0,
            60,
            40,
            60,
            80,
            61,
            80,
            40,
            20,
            20,
            80,
            0,
            20,
            40,
            80,
            40,
            0,
            40,
            0,
            60,
            20,
            0,
            20,
            60,
            0,
            20,
            80,
            60,
            0,
            60,
        ]
    )
    age = np.array(
        [
            268,
            312,
            300,
            294,
            301,
            316,
            295,
            315,
            228,
            293,
            306,
            321,
            305,
            296,
            310,
            292,
            290,
            309,
            303,
            313,
            319,
            297,
            304,
            311,
            323,
            302,
            298,
            307,
            308,
            299,
            314,
            4,
            317,
        ]
    )
    fitted = fit_bgnbd(frequency, recency, age)
    assert min(fitted.a, fitted.b) > 1e3  # the narrow Beta: one chance, a/(a+b)
    assert 0.2 < fitted.a / (fitted.a + fitted.b) < 0.6
    alive = p_alive(fitted, frequency, recency, age)
    assert alive[0] > alive[1]  # ordered later, so more likely still a customer
    assert np.all((alive > 0) & (alive <= 1))


def test_clv_is_purchases_times_value_and_shrinks_with_discount_and_margin() -> None:
    history = {"frequency": [0, 4], "recency": [0, 200], "age": [300, 300], "mean_value": [0, 50]}
    plain = clv(CDNOW, SPEND, **history, horizon=Horizon(length=365))
    purchases = expected_purchases(
        CDNOW, 365, history["frequency"], history["recency"], history["age"]
    )
    worth = purchases * expected_value(SPEND, history["frequency"], history["mean_value"])
    assert plain == pytest.approx(worth)
    cheaper = clv(CDNOW, SPEND, **history, horizon=Horizon(length=365, discount=0.01, margin=0.3))
    assert np.all(cheaper < 0.3 * plain)


def test_fits_that_cannot_work_say_why() -> None:
    with pytest.raises(FitFailed, match="needs customers with repeat purchases"):
        fit_bgnbd([0, 0, 0], [0, 0, 0], [10, 20, 30])
    with pytest.raises(ValueError, match="1 customers with recency after age"):
        fit_bgnbd([1, 2], [40, 10], [30, 30])
    with pytest.raises(FitFailed, match="at least two customers with paid repeat purchases"):
        fit_gamma_gamma([0, 3, 2], [0, 20.0, 0.0])
