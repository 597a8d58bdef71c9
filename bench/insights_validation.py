"""How well the purchase models predict, on real customers: the CDNOW sample.

    .venv/bin/python bench/insights_validation.py [--wheel PATH] [--seed 1]

CDNOW's 23,570 customers made their first purchase in the first quarter of 1997; their
orders to June 1998 ship as ``datasets/CDNOW_master.txt`` inside the ``lifetimes`` wheel on
PyPI (read from the wheel only, not its code; nothing is kept). The models are fitted on the
first 39 weeks and predict the next 39 weeks per customer, against two baselines: each
customer's own calibration rate carried forward, and everyone at the population's mean rate.
Without the wheel (``pip download`` fails, no network) the same is done on customers drawn
from the models with CDNOW's published parameters, and the output says so. Figures only.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.insight.btyd import (  # noqa: E402
    BgNbd,
    GammaGamma,
    expected_purchases,
    expected_value,
    fit_bgnbd,
    fit_gamma_gamma,
)
from mailer.insight.history import Floats, Purchases, Summary, purchase_days, summarise  # noqa: E402
from mailer.insight.simulate import simulate  # noqa: E402

START = date(1997, 1, 1).toordinal()
CALIBRATION_END = START + 39 * 7 - 1  # 1997-09-30
HOLDOUT_END = CALIBRATION_END + 39 * 7  # 1998-06-30
WEEKS = 39.0
PUBLISHED = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)  # in weeks, the 1/10 sample
PUBLISHED_SPEND = GammaGamma(6.25, 3.74, 15.44)
# which file, its header lines, and its id, yyyymmdd and dollars columns
FILES = {"master": (1, (0, 1, 3)), "sample": (0, (0, 2, 4))}


def fetch_wheel(folder: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "lifetimes==0.11.3",
            "--no-deps",
            "-d",
            folder,
        ],
        check=True,
        capture_output=True,
    )
    return next(folder.glob("*.whl"))


def read_cdnow(wheel: Path, which: str) -> Purchases:
    """Orders from one of the wheel's CDNOW files."""
    text = zipfile.ZipFile(wheel).read(f"lifetimes/datasets/CDNOW_{which}.txt").decode()
    header, columns = FILES[which]
    rows = np.loadtxt(io.StringIO(text), skiprows=header, usecols=columns, dtype=np.float64)
    ymd = rows[:, 1].astype(np.int64)
    days = [
        date(y, m, d).toordinal()
        for y, m, d in zip(ymd // 10000, ymd // 100 % 100, ymd % 100, strict=True)
    ]
    return Purchases(rows[:, 0].astype(np.int64), np.array(days), rows[:, 2])


def simulated(seed: int) -> Purchases:
    rng = np.random.default_rng(seed)
    in_days = BgNbd(r=PUBLISHED.r, alpha=PUBLISHED.alpha * 7, a=PUBLISHED.a, b=PUBLISHED.b)
    first = START + rng.integers(0, 84, 23_570)
    return simulate(in_days, PUBLISHED_SPEND, first_day=first, until=HOLDOUT_END, rng=rng)


def until(orders: Purchases, last: int) -> Purchases:
    keep = orders.day <= last
    return Purchases(orders.customer[keep], orders.day[keep], orders.amount[keep])


def holdout(orders: Purchases, customers: np.ndarray) -> tuple[Floats, Floats]:
    """Purchase days and spend per customer after the calibration period."""
    days = purchase_days(orders)
    later = (days.day > CALIBRATION_END) & (days.day <= HOLDOUT_END)
    where = np.searchsorted(customers, days.customer[later])
    count = np.bincount(where, minlength=len(customers)).astype(np.float64)
    spend = np.bincount(where, weights=days.amount[later], minlength=len(customers))
    return count, spend


def errors(predicted: Floats, actual: Floats) -> str:
    mae = np.mean(np.abs(predicted - actual))
    rmse = np.sqrt(np.mean((predicted - actual) ** 2))
    return f"MAE {mae:8.3f}  RMSE {rmse:8.3f}"


def timed(what: str, fit: Callable[[], object]) -> object:
    began = time.perf_counter()
    result = fit()
    print(f"  {what}: {result}  ({time.perf_counter() - began:.2f} s)")
    return result


def predictions(cal: Summary) -> dict[str, tuple[Floats, Floats]]:
    """Holdout purchases and spend per customer: the models' and the two baselines'."""
    x, t_x, age = cal.frequency, cal.recency / 7, cal.age / 7
    model = timed("BG/NBD (weeks)", lambda: fit_bgnbd(x, t_x, age))
    spend = timed("Gamma-Gamma", lambda: fit_gamma_gamma(x, cal.mean_repeat))
    assert isinstance(model, BgNbd) and isinstance(spend, GammaGamma)
    expected = expected_purchases(model, WEEKS, x, t_x, age)
    own_rate = x / np.maximum(age, 1 / 7) * WEEKS
    repeat_spend = cal.mean_repeat * x
    population = np.full(len(x), x.sum() / age.sum() * WEEKS)
    population_spend = np.full(len(x), repeat_spend.sum() / age.sum() * WEEKS)
    return {
        "BG/NBD + Gamma-Gamma": (expected, expected * expected_value(spend, x, cal.mean_repeat)),
        "own rate, scaled": (own_rate, repeat_spend / np.maximum(age, 1 / 7) * WEEKS),
        "population mean": (population, population_spend),
    }


def report(orders: Purchases, source: str) -> None:
    cal = summarise(until(orders, CALIBRATION_END), CALIBRATION_END)
    actual, actual_spend = holdout(orders, cal.customer)
    print(f"{source}: {len(cal.customer)} customers, {len(orders.day)} orders")
    print(f"  published (1/10 sample, weeks): {PUBLISHED}")
    found = predictions(cal)
    groups = {
        "all customers": np.ones(len(actual), dtype=bool),
        "one-time buyers (no repeat in calibration)": cal.frequency == 0,
        "new customers (first order in March 1997, the last month of acquisition)": (
            cal.age <= CALIBRATION_END - date(1997, 3, 1).toordinal()
        ),
    }
    for group, members in groups.items():
        print(f"  {group}: {int(members.sum())}")
        for name, (purchases, spend) in found.items():
            print(
                f"    {name:22} purchases {errors(purchases[members], actual[members])}"
                f"   spend {errors(spend[members], actual_spend[members])}"
            )
    print(f"  aggregate holdout: actual {actual.sum():.0f} purchases, ${actual_spend.sum():,.0f}")
    for name, (purchases, spend) in found.items():
        print(f"    {name:22} predicted {purchases.sum():.0f} purchases, ${spend.sum():,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded lifetimes-0.11.3 wheel")
    parser.add_argument("--seed", type=int, default=1, help="for the generated fallback")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        try:
            wheel = args.wheel or fetch_wheel(Path(folder))
            master, sample = read_cdnow(wheel, "master"), read_cdnow(wheel, "sample")
        except (subprocess.CalledProcessError, OSError, KeyError, StopIteration) as error:
            print(
                f"CDNOW could not be read ({type(error).__name__}); GENERATED data from the model"
            )
            report(simulated(args.seed), "generated from the published CDNOW parameters")
            return
    report(sample, "CDNOW 1/10 sample (the papers' data)")
    report(master, "CDNOW master")


if __name__ == "__main__":
    main()
