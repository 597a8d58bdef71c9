"""Reading orders from CSV: one row per line item, the rows of one order together.

Pure code over text and a clock's reading; the database side is ``commerce.orders``. Each
row is checked on its own, then each order as a whole: an order with one bad line is
rejected whole, every bad line named by its file line and reason, so nothing is half
imported. Money never passes through a float (see ``mailer.core.money``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import NamedTuple

from mailer.core.fieldtypes import utc_moment
from mailer.core.money import currency_code, to_minor
from mailer.customers.csv_rows import (
    InvalidRow,
    RejectedRow,
    clean_text,
    normalise_email,
    normalise_header,
    too_many_cells,
)

_ALIASES = {
    **dict.fromkeys(("order_id", "orderid", "order_no", "orderno", "order_number"), "order_ref"),
    **dict.fromkeys(("invoice", "invoiceno", "invoice_no", "order"), "order_ref"),
    **dict.fromkeys(("customer_email", "customer_e_mail", "mail"), "email"),
    **dict.fromkeys(
        ("date", "invoicedate", "invoice_date", "order_date", "created_at"), "ordered_at"
    ),
    **dict.fromkeys(("stockcode", "stock_code", "item", "product_id", "article"), "sku"),
    **dict.fromkeys(("description", "product_name", "item_name", "name", "title"), "product"),
    **dict.fromkeys(("qty", "amount", "count", "units"), "quantity"),
    **dict.fromkeys(("unitprice", "price", "unit_price_gross", "item_price"), "unit_price"),
    **dict.fromkeys(("cost", "unitcost", "unit_cost_price", "purchase_price"), "unit_cost"),
    **dict.fromkeys(("source", "sales_channel", "store"), "channel"),
    **dict.fromkeys(("product_category", "product_type", "type"), "category"),
    **dict.fromkeys(("currency_code", "ccy"), "currency"),
    **dict.fromkeys(("order_status", "state"), "status"),
}
_STATUS_WORDS = {
    **dict.fromkeys(("", "placed", "paid", "complete", "completed", "shipped"), "placed"),
    **dict.fromkeys(("returned", "return", "refunded", "refund"), "returned"),
    **dict.fromkeys(("cancelled", "canceled", "void"), "cancelled"),
}
_DOTTED = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
LIMITS = {"order_ref": 100, "sku": 100, "product": 200, "category": 100, "channel": 50}
ORDER_FIELDS = ("email", "ordered_at", "currency", "channel", "status")
ORDER_STATUSES = ("placed", "returned", "cancelled")
_order_fields = attrgetter(*ORDER_FIELDS)
_item_fields = attrgetter("sku", "product", "category", "quantity", "unit_price", "unit_cost")
_HEAD = ("order_ref", "email", "ordered_at", "currency", "status", "channel")  # an order's
_ITEM = ("sku", "product", "category", "quantity", "unit_price", "unit_cost")  # a line's
_LIMITED = tuple((i, LIMITS[c]) for i, c in enumerate(_HEAD + _ITEM) if c in LIMITS)
_SHORTEST = min(LIMITS.values())
MAX_QUANTITY = 100_000  # items of one line; more is a typo, and would overflow the totals


Converter = Callable[[Mapping[str, str], "Rules"], object]


def order_header(name: str) -> str:
    """'Order ID', 'OrderNo', 'InvoiceNo' -> 'order_ref'; 'StockCode' -> 'sku'; and so on."""
    key = normalise_header(name)
    return _ALIASES.get(key, key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """What a row is checked against: the time now, the zone of a date without one, and
    the currencies the company sells in (empty: any ISO 4217 currency)."""

    now: datetime
    zone: tzinfo
    currencies: frozenset[str]


@dataclass(slots=True, kw_only=True)  # not frozen: that triples its cost, a million times
class LineRow:
    """One valid CSV row: the order it belongs to and one of its line items."""

    line: int
    order_ref: str
    email: str
    ordered_at: datetime
    currency: str
    channel: str
    status: str
    sku: str
    product: str
    category: str
    quantity: int
    unit_price: int
    unit_cost: int | None


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """An order read from the file, every line valid; its fingerprint tells a re-import."""

    order_ref: str
    first_line: int
    lines: tuple[LineRow, ...]
    fingerprint: str


class Packed(NamedTuple):
    """A checked order as the database side takes it, in plain values: sent to another
    process, a Draft of LineRows costs ten times as much to pickle and unpickle."""

    order_ref: str
    first_line: int
    fingerprint: str
    head: tuple[str, datetime, str, str, str]  # email, ordered_at, currency, channel, status
    items: tuple[tuple[str, str, str, int, int, int | None], ...]  # _item_fields of each line


def packed(draft: Draft) -> Packed:
    items = tuple(map(_item_fields, draft.lines))
    head = _order_fields(draft.lines[0])
    return Packed(draft.order_ref, draft.first_line, draft.fingerprint, head, items)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """An order left out whole (or a row that names no order), with each bad line."""

    order_ref: str
    lines: int
    problems: tuple[BadLine, ...]
    began_at: int | None = None  # an order met again after others: the line it began at


def parse_row(line: int, cells: Mapping[str, str], rules: Rules) -> LineRow:
    """Validate one row; raise InvalidRow naming every problem in it, by column."""
    text = {c: _cell(cells.get(c) or "") for c in _TEXT_COLUMNS}
    errors = {
        c: f"{c} is longer than {n} characters" for c, n in LIMITS.items() if len(text[c]) > n
    }
    values: dict[str, object] = {}
    for column, convert in _CONVERTERS:
        try:
            values[column] = convert(text, rules)
        except ValueError as exc:
            errors.setdefault(column, str(exc))
    if "currency" in values:  # a price is read in its currency's decimals
        for column in ("unit_price", "unit_cost"):
            try:
                values[column] = _price(text[column], column, str(values["currency"]))
            except ValueError as exc:
                errors.setdefault(column, str(exc))
    if errors:
        raise InvalidRow(errors)
    channel, category = text["channel"].lower(), text["category"]
    return LineRow(line=line, channel=channel, category=category, **values)  # type: ignore[arg-type]


def _cell(value: str) -> str:
    """A cell as stored; the usual printable one costs a strip, not a regular expression."""
    return value.strip() if value.isprintable() else clean_text(value) or ""


_TEXT_COLUMNS = (
    "order_ref",
    "email",
    "ordered_at",
    "sku",
    "product",
    "category",
    "quantity",
    "unit_price",
    "unit_cost",
    "currency",
    "channel",
    "status",
)


def _email(text: Mapping[str, str], rules: Rules) -> str:
    if not text["email"]:
        raise ValueError("no email address")
    return _valid_email(text["email"])


@lru_cache(maxsize=1 << 17)  # checking an address costs ~70 us; an order repeats it per line
def _valid_email(text: str) -> str:
    return normalise_email(text)


def _ordered_at(text: Mapping[str, str], rules: Rules) -> datetime:
    if not text["ordered_at"]:
        raise ValueError("no order date")
    moment = parse_moment(text["ordered_at"], rules.zone)
    if moment > rules.now:
        raise ValueError(f"order date {text['ordered_at']!r} is in the future")
    return moment


@lru_cache(maxsize=4096)  # the lines of an order share its time
def parse_moment(text: str, zone: tzinfo) -> datetime:
    """2024-03-01, 2024-03-01 14:30, 2024-03-01T14:30:00+02:00, 01.03.2024 14:30, in UTC;
    without an offset the time is the business's (``zone``)."""
    dotted = _DOTTED.match(text)
    try:
        if dotted:
            d, m, y, hh, mm, ss = (int(g or 0) for g in dotted.groups())
            moment = datetime(y, m, d, hh, mm, ss)
        elif len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"order date {text!r} is not a date; use 2024-03-01, 2024-03-01 14:30 or 01.03.2024"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return utc_moment(moment)
    except ValueError as exc:
        raise ValueError(f"order date {text!r} is {exc}") from None


def _currency(text: Mapping[str, str], rules: Rules) -> str:
    if not text["currency"]:
        if len(rules.currencies) == 1:
            return next(iter(rules.currencies))
        raise ValueError("no currency (it may be left out when [company] currencies names one)")
    code = currency_code(text["currency"])
    if rules.currencies and code not in rules.currencies:
        sold = ", ".join(sorted(rules.currencies))
        raise ValueError(f"the company does not sell in {code} ([company] currencies: {sold})")
    return code


def _status(text: Mapping[str, str], rules: Rules) -> str:
    status = _STATUS_WORDS.get(text["status"].lower())
    if status is None:
        raise ValueError(f"status {text['status']!r} is not one of {', '.join(ORDER_STATUSES)}")
    return status


def _quantity(text: Mapping[str, str], rules: Rules) -> int:
    """A line without a quantity (no column, or an empty cell) is one item."""
    if not text["quantity"]:
        return 1
    try:
        quantity = int(text["quantity"])
    except ValueError:
        raise ValueError(f"quantity {text['quantity']!r} is not a whole number") from None
    if not quantity:
        raise ValueError("quantity is 0")
    if abs(quantity) > MAX_QUANTITY:
        raise ValueError(f"quantity {quantity} is more than {MAX_QUANTITY:,} items")
    return quantity


@lru_cache(maxsize=1 << 14)  # a shop's prices repeat; an error is not kept
def _price(text: str, column: str, currency: str) -> int | None:
    if not text:
        if column == "unit_cost":
            return None
        raise ValueError("no unit price")
    if text.startswith("-"):
        raise ValueError(f"{column} is negative; a return has a negative quantity")
    return to_minor(text, currency)


def _required(column: str, missing: str) -> Converter:
    def convert(text: Mapping[str, str], rules: Rules) -> str:
        if not text[column]:
            raise ValueError(missing)
        return text[column]

    return convert


_CONVERTERS: tuple[tuple[str, Converter], ...] = (
    ("order_ref", _required("order_ref", "no order id")),
    ("email", _email),
    ("ordered_at", _ordered_at),
    ("currency", _currency),
    ("status", _status),
    ("sku", _required("sku", "no SKU")),
    ("product", _required("product", "no product name")),
    ("quantity", _quantity),
)


Row = tuple[int, list[str]] | RejectedRow  # as csv_rows.read_table gives them
_Head = tuple[str, str, datetime, str, str, str]  # order_ref and ORDER_FIELDS, checked
_Item = tuple[str, str, str, int, int, int | None]  # as _item_fields gives them
_Quick = tuple[int, _Head, _Item]  # a row the fast path took: its line, order and item


def parse_rows(
    header: Sequence[str], rows: Iterable[Row], rules: Rules
) -> Iterator[LineRow | tuple[str, BadLine]]:
    """Each row (cells in the order of ``header``) checked, or (its order id, why it is bad).
    A well-formed row takes a fast path; any other goes through ``parse_row``, whose
    messages are the ones a user sees."""
    fast = _FastPath(header, rules)
    for row in rows:
        quick = None if isinstance(row, RejectedRow) else fast.row(*row)
        yield _slow(header, row, rules) if quick is None else _line_row(quick)


def _slow(header: Sequence[str], row: Row, rules: Rules) -> LineRow | tuple[str, BadLine]:
    """A row the fast path did not take, checked by ``parse_row``."""
    if isinstance(row, RejectedRow):
        return "", BadLine(row.line, row.reason)
    line, cells = row
    named = dict(zip(header, cells, strict=False))
    extra = too_many_cells(header, cells)
    try:
        if extra:
            raise ValueError(extra)
        return parse_row(line, named, rules)
    except ValueError as exc:
        ref = (clean_text(named.get("order_ref") or "") or "")[: LIMITS["order_ref"]]
        return ref, BadLine(line, str(exc))


def _line_row(quick: _Quick) -> LineRow:
    line, (ref, email, moment, currency, status, channel), item = quick
    sku, product, category, quantity, unit_price, unit_cost = item
    return LineRow(
        line=line,
        order_ref=ref,
        email=email,
        ordered_at=moment,
        currency=currency,
        status=status,
        channel=channel,
        sku=sku,
        product=product,
        category=category,
        quantity=quantity,
        unit_price=unit_price,
        unit_cost=unit_cost,
    )


class _FastPath:
    """``parse_row`` for the usual row: printable cells within their limits, every value
    well formed. Cells are taken by position, and what an order's lines share is checked
    once per order. It answers None where ``parse_row`` might say anything else."""

    def __init__(self, header: Sequence[str], rules: Rules) -> None:
        where = [header.index(c) if c in header else -1 for c in _HEAD + _ITEM]
        self._cells = itemgetter(*where)  # -1: a column the file lacks, read as ""
        self._width = len(header)
        self._rules = rules
        self._key: tuple[str, ...] = ()
        self._head: _Head | None = None

    def row(self, line: int, cells: list[str]) -> _Quick | None:
        if len(cells) != self._width:  # a short row, or one with a stray separator
            return None
        cells.append("")
        values: tuple[str, ...] = self._cells(cells)
        if not "".join(values).isprintable():
            return None
        values = tuple(map(str.strip, values))
        if values[:6] != self._key:
            self._order(values[:6])
        head = self._head
        sku, product, category, quantity, price, cost = values[6:]
        if head is None or not (sku and product):
            return None
        if max(map(len, values)) > _SHORTEST and _too_long(values):
            return None
        currency = head[3]
        try:
            amount = int(quantity) if quantity else 1  # as _quantity: no quantity is one item
            if not amount or abs(amount) > MAX_QUANTITY:
                return None
            unit_price = _price(price, "unit_price", currency)
            unit_cost = _price(cost, "unit_cost", currency)
        except ValueError:
            return None
        # a price is None only for a cost
        return line, head, (sku, product, category, amount, unit_price, unit_cost)  # type: ignore[return-value]

    def _order(self, key: tuple[str, ...]) -> None:
        """The order's values of a row that says other than the previous row: checked once
        for all the lines of an order (None when one is bad)."""
        self._key, self._head = key, None
        text, rules = dict(zip(_HEAD, key, strict=True)), self._rules
        if not key[0]:  # no order id
            return
        try:
            email, moment = _email(text, rules), _ordered_at(text, rules)
            currency, status = _currency(text, rules), _status(text, rules)
        except ValueError:
            return
        self._head = (key[0], email, moment, currency, status, key[5].lower())


def packed_orders(
    header: Sequence[str], rows: Iterable[Row], rules: Rules
) -> Iterator[Packed | Rejected]:
    """``orders(parse_rows(header, rows, rules))`` with each Draft packed, for files of
    millions of rows: an order whose rows all took the fast path and agree is packed from
    them as they are, without a LineRow or a Draft; any other goes through ``orders``'
    checks, so its reasons are the ones they give."""
    fast = _FastPath(header, rules)
    seen: dict[str, int] = {}
    quick: list[_Quick] = []  # the order's rows, while the fast path took each
    full: list[LineRow | tuple[str, BadLine]] = []  # its rows, once it did not take one
    current = ""  # the order id of the group's first row
    for row in rows:
        took = None if isinstance(row, RejectedRow) else fast.row(*row)
        checked = _slow(header, row, rules) if took is None else None
        ref = took[1][0] if took is not None else _ref(checked) if checked is not None else ""
        if (quick or full) and (not ref or ref != current):
            yield _packed(quick, seen) if quick else _pack(_finish(full, seen))
            quick, full = [], []
        if not (quick or full):
            current = ref
        if took is not None and not full:
            quick.append(took)
            continue
        if quick:
            full, quick = list(map(_line_row, quick)), []
        full.append(_line_row(took) if took is not None else checked)  # type: ignore[arg-type]
    if quick or full:
        yield _packed(quick, seen) if quick else _pack(_finish(full, seen))


def _pack(checked: Draft | Rejected) -> Packed | Rejected:
    return packed(checked) if isinstance(checked, Draft) else checked


def _packed(quick: list[_Quick], seen: dict[str, int]) -> Packed | Rejected:
    """An order all of whose rows the fast path took: packed as it is when they agree, as
    ``_finish`` would have it; checked by ``_finish`` when they do not."""
    first, head, _ = quick[0]
    items = [item for _, _, item in quick]
    disagree = any(h is not head and h != head for _, h, _ in quick)
    if disagree or (head[4] != "returned" and any(item[3] < 0 for item in items)):
        return _pack(_finish(list(map(_line_row, quick)), seen))
    ref = head[0]
    if ref in seen:
        return _came_back(ref, first, len(quick), seen)
    seen[ref] = first
    said = (head[1], head[2], head[3], head[5], head[4])  # ORDER_FIELDS
    return Packed(ref, first, _digest(said, items), said, tuple(items))


def _too_long(values: tuple[str, ...]) -> bool:
    """Whether a cell is over its limit; asked only of a row with one over the shortest."""
    return any(len(values[i]) > limit for i, limit in _LIMITED)


def orders(rows: Iterable[LineRow | tuple[str, BadLine]]) -> Iterator[Draft | Rejected]:
    """The rows gathered into orders, an order's rows being next to each other as a shop
    exports them; each order checked whole. An order that comes back after other orders is
    rejected from there on: its first part has been read already."""
    seen: dict[str, int] = {}
    group: list[LineRow | tuple[str, BadLine]] = []
    current = ""  # the order id of the group's first row
    for row in rows:
        ref = row.order_ref if isinstance(row, LineRow) else row[0]
        if group and (not ref or ref != current):
            yield _finish(group, seen)
            group = []
        if not group:
            current = ref
        group.append(row)
    if group:
        yield _finish(group, seen)


def _ref(row: LineRow | tuple[str, BadLine]) -> str:
    return row.order_ref if isinstance(row, LineRow) else row[0]


def _finish(group: list[LineRow | tuple[str, BadLine]], seen: dict[str, int]) -> Draft | Rejected:
    ref = _ref(group[0])
    good = [row for row in group if isinstance(row, LineRow)]
    bad = (
        [row[1] for row in group if not isinstance(row, LineRow)] if len(good) < len(group) else []
    )
    first = group[0].line if isinstance(group[0], LineRow) else group[0][1].line
    if ref and ref in seen:
        return _came_back(ref, first, len(group), seen)
    if ref:
        seen[ref] = first
    bad += _disagreements(good)
    if bad or not good:
        problems = tuple(sorted(bad, key=lambda b: b.line))
        return Rejected(order_ref=ref, lines=len(group), problems=problems)
    return Draft(order_ref=ref, first_line=first, lines=tuple(good), fingerprint=fingerprint(good))


def _came_back(ref: str, first: int, lines: int, seen: dict[str, int]) -> Rejected:
    reason = f"order {ref} began at line {seen[ref]}; keep an order's lines together"
    return Rejected(
        order_ref=ref, lines=lines, problems=(BadLine(first, reason),), began_at=seen[ref]
    )


def _disagreements(lines: list[LineRow]) -> list[BadLine]:
    """Lines that say something else about their order than its first line, and negative
    quantities in an order not marked as returned."""
    if not lines:
        return []
    head, bad = lines[0], []
    said = _order_fields(head)
    for row in lines:
        if _order_fields(row) != said:
            differ = [f for f in ORDER_FIELDS if getattr(row, f) != getattr(head, f)]
            bad.append(BadLine(row.line, f"{', '.join(differ)} not as on line {head.line}"))
        elif row.quantity < 0 and row.status != "returned":
            reason = f"quantity {row.quantity} is negative but the order's status is not returned"
            bad.append(BadLine(row.line, reason))
    return bad


def fingerprint(lines: Iterable[LineRow]) -> str:
    """What an order says, hashed: the same order imported again has the same one."""
    rows = list(lines)
    return _digest(_order_fields(rows[0]), list(map(_item_fields, rows)))


def _digest(said: tuple[str, datetime, str, str, str], items: list[_Item]) -> str:
    """The fingerprint of an order that says ``said`` (ORDER_FIELDS) with these items."""
    email, moment, currency, channel, status = said
    content = [email, moment.isoformat(), currency, channel, status]
    return hashlib.sha256(repr((content, items)).encode()).hexdigest()
