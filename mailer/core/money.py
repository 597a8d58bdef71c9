"""Money as exact integers: an amount is stored in the currency's minor units (cents,
fils, yen), never as a float, so sums of 0.10 and 0.20 are 30 cents exactly.

The exponent (how many decimals a currency has) is ISO 4217's, fixed here rather than taken
from CLDR: CLDR changes how it *writes* some currencies between releases (IDR lost its
decimals in babel 2.19), and a stored amount must never change meaning with a library update.
"""

from __future__ import annotations

import re

from babel.numbers import list_currencies

# ISO 4217 currencies whose exponent is not 2
_EXPONENTS = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}
_KNOWN = frozenset(list_currencies())
_AMOUNT = re.compile(r"^(\d+)(?:[.,](\d*))?$")


def currency_code(text: str) -> str:
    """'eur' -> 'EUR'; ValueError unless it is an ISO 4217 code."""
    code = text.strip().upper()
    if len(code) != 3 or code not in _KNOWN:
        raise ValueError(f"{text!r} is not an ISO 4217 currency code such as EUR or JPY")
    return code


def exponent(currency: str) -> int:
    """Decimals in the currency: JPY 0, EUR 2, BHD 3."""
    return _EXPONENTS.get(currency, 2)


MAX_MINOR = 10**12  # a unit price's bound in minor units: sums of lines stay in 64 bits


def to_minor(text: str, currency: str) -> int:
    """'12.50' EUR -> 1250, '1200' JPY -> 1200, '1.234' BHD -> 1234, exactly; a decimal
    comma ('12,50') is read too. ValueError for anything else, or more decimals than the
    currency has ('12.345' EUR), unless they are zeros."""
    found = _AMOUNT.match(text.strip())
    if not found:
        raise ValueError(f"price {text!r} is not an amount like 12.50")
    whole, fraction = found.group(1), (found.group(2) or "").rstrip("0")
    digits = exponent(currency)
    if len(fraction) > digits:
        raise ValueError(f"price {text!r} has more decimals than {currency}'s {digits}")
    amount = int(whole + fraction.ljust(digits, "0"))
    if amount > MAX_MINOR:
        raise ValueError(f"price {text!r} is more than an item can cost")
    return amount


def from_minor(amount: int, currency: str) -> str:
    """1250 EUR -> '12.50', -5 BHD -> '-0.005', 1200 JPY -> '1200': the exact decimal text."""
    digits = exponent(currency)
    sign, units = ("-" if amount < 0 else ""), abs(amount)
    if not digits:
        return f"{sign}{units}"
    whole, fraction = divmod(units, 10**digits)
    return f"{sign}{whole}.{fraction:0{digits}d}"
