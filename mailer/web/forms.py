"""The public forms a company's website posts to: an inquiry, and a newsletter sign-up
with double opt-in.

Anyone may post, from any page (an HTML form or JSON; no JavaScript needed), so neither
form reads the staff session or asks for a CSRF token; what keeps them from abuse is a
honeypot field, posts counted per client and per address in the database (shared by every
process), and a size limit on the body and on each field. Only the origins in
``[forms] cors_origins`` are told by CORS that their scripts may read the answer.

An inquiry is logged with channel ``web`` and goes down the same path as mail
(``inbound.intake``): the same rules, the same ``ack`` template through the outbox, the
same desk. A sign-up gets a confirmation mail whose signed link expires; the customer's
marketing consent is recorded (when, ``web form``, from which address) only when they
confirm on that page, by a button rather than by the GET of the link itself, so a mail
scanner that opens every link confirms nothing. A sign-up for an address already
subscribed gets the same answer as any other.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailer.api import limits
from mailer.api.limits import Verdict
from mailer.core.categories import Category
from mailer.core.config import FormsSettings
from mailer.core.errors import NotFound
from mailer.core.fieldtypes import whole_number
from mailer.customers import profiles, tokens
from mailer.inbound import intake
from mailer.inbound.intake import AckPolicy
from mailer.inbound.parsing import parse
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.web import customer_words
from mailer.web.common import WebState, db, state
from mailer.web.form_fields import (
    FormProblem,
    InquiryForm,
    SubscribeForm,
    allowed_origin,
    inquiry_message,
    is_robot,
    read_inquiry,
    read_subscribe,
)
from mailer.web.unsubscribe import framing

SOURCE = "web form"  # the consent's source and a new customer's
CHANNEL = "web"
HOUR = timedelta(hours=1)
MAX_FIELDS = 50
FORMS = ("inquiry", "subscribe")


async def inquiry(request: Request) -> Response:
    return await _posted(request, "inquiry")


async def subscribe(request: Request) -> Response:
    return await _posted(request, "subscribe")


async def preflight(request: Request) -> Response:
    """CORS preflight: a listed origin may post JSON from its scripts; any other is refused."""
    origin = allowed_origin(request.headers.get("origin"), _settings(request).cors_origins)
    if origin is None:
        return PlainTextResponse("This origin may not post to the forms.\n", 403)
    headers = {
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
    }
    return Response(status_code=204, headers=_cors(origin) | headers)


async def thanks(request: Request) -> Response:
    """Where a posted HTML form lands when the website names no page of its own."""
    form = request.path_params["form"]
    if form not in FORMS:
        return PlainTextResponse("Not Found\n", 404)
    lang = customer_words.language(request.query_params.get("lang"))
    words = customer_words.WORDS[lang]
    return _page(request, lang, words[f"thanks_{form}"], words[f"thanks_{form}_help"])


async def confirm_page(request: Request) -> Response:
    """The link in the confirmation mail: a page with one button that confirms."""
    customer = await _confirming(request)
    if isinstance(customer, Response):
        return customer
    lang = customer_words.language(customer.locale)
    words = customer_words.WORDS[lang]
    return _page(
        request,
        lang,
        words["confirm_title"],
        words["confirm_help"],
        action=request.url.path,
        button=words["confirm_button"],
    )


async def confirm(request: Request) -> Response:
    customer = await _confirming(request)
    if isinstance(customer, Response):
        return customer
    web = state(request)
    ip = request.client.host if request.client else None
    await db(request, _confirm, web, customer.id, ip, web.clock.now())
    lang = customer_words.language(customer.locale)
    return _page(request, lang, customer_words.WORDS[lang]["subscribed"], "")


async def _posted(request: Request, form: str) -> Response:
    settings = _settings(request)
    origin = allowed_origin(request.headers.get("origin"), settings.cors_origins)
    as_json = _content_type(request) == "application/json"
    try:
        fields = await _fields(request, settings.max_body_bytes)
        if is_robot(fields):
            return _accepted(request, form, None, as_json, origin)
        read = (
            read_inquiry(fields, settings.max_message_chars)
            if form == "inquiry"
            else read_subscribe(fields)
        )
    except FormProblem as problem:
        return _refused(request, problem, as_json, origin)
    web = state(request)
    ip = request.client.host if request.client else ""
    now = web.clock.now()
    if isinstance(read, InquiryForm):
        verdict = await db(request, _take_inquiry, web, _policy(request), read, ip, now)
    else:
        verdict = await db(request, _take_subscription, web, read, ip, now)
    if not verdict.allowed:
        return _too_many(request, verdict, as_json, origin)
    return _accepted(request, form, read.locale, as_json, origin)


def _take_inquiry(
    web: WebState, policy: AckPolicy, form: InquiryForm, ip: str, now: datetime
) -> Verdict:
    """Logged and decided like mail, in one transaction with the posts' counts."""
    inbound = parse(inquiry_message(form, now))
    locale = form.locale or policy.language_of(inbound)  # told before the write lock
    with web.engine.begin() as conn:
        verdict = _counted(conn, web.cfg.settings.forms, ip, form.email, now)
        if verdict.allowed:
            profiles.find_or_add(conn, form.email, form.name, locale, now, SOURCE)
            intake.handle(conn, inbound, now, policy, channel=CHANNEL)
    return verdict


def _take_subscription(web: WebState, form: SubscribeForm, ip: str, now: datetime) -> Verdict:
    """A confirmation mail, unless the address already gets marketing (then nothing)."""
    settings = web.cfg.settings.forms
    with web.engine.begin() as conn:
        verdict = _counted(conn, settings, ip, form.email, now)
        if not verdict.allowed:
            return verdict
        customer_id = profiles.find_or_add(conn, form.email, form.name, form.locale, now, SOURCE)
        customer = profiles.get_id(conn, customer_id)
        if not wants_confirmation(customer):
            return verdict
        until = now + settings.confirm_within
        token = tokens.sign_confirmation(web.secret, customer_id, until)
        confirmation = NewMessage(
            dedupe_key=f"subscribe:{customer_id}:{now.timestamp():.6f}",
            to_address=customer.email,
            category=Category.TRANSACTIONAL,  # asked for this minute; no consent is needed
            template="subscribe_confirm",
            customer_id=customer_id,
            context={"confirm_url": _confirm_url(web, token), "confirm_until": until},
            priority=100,
            valid_for=settings.confirm_within,
        )
        outbox.enqueue_in(conn, [confirmation], now)
    return verdict


def wants_confirmation(customer: profiles.Profile) -> bool:
    """Only an address that does not get marketing yet has anything to confirm."""
    return not customer.marketing_consent or customer.unsubscribed_at is not None


def _counted(
    conn: Connection, settings: FormsSettings, ip: str, email: str, now: datetime
) -> Verdict:
    """This post counted against its client and its address; the first limit it passes
    is the verdict (hashes are kept, not the addresses)."""
    checks = (
        ("ip", ip, settings.per_ip_per_hour),
        ("address", email, settings.per_address_per_hour),
    )
    counts = [
        (limits.count_form_post(conn, scope, _hash(value), now, HOUR), limit)
        for scope, value, limit in checks
    ]
    verdicts = [limits.judge(number, limit, now, HOUR) for number, limit in counts]
    return next((v for v in verdicts if not v.allowed), verdicts[0])


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _confirm(web: WebState, customer_id: int, ip: str | None, now: datetime) -> None:
    with web.engine.begin() as conn:
        profiles.confirm_marketing(conn, customer_id, now=now, source=SOURCE, ip=ip)


async def _confirming(request: Request) -> profiles.Profile | Response:
    """The customer an unexpired link confirms; else the page that says why not: a link
    past its time says so in the customer's language, and how to get a new one."""
    web = state(request)
    signed = tokens.read_confirmation(web.secret, str(request.path_params["token"]))
    customer = None if signed is None else await db(request, _load, web, signed[0])
    if signed is None or customer is None:
        return _not_valid(request)
    if web.clock.now() < signed[1]:
        return customer
    lang = customer_words.language(customer.locale)
    words = customer_words.WORDS[lang]
    return _page(request, lang, words["link_expired"], words["link_expired_help"], status=410)


def _load(web: WebState, customer_id: int) -> profiles.Profile | None:
    with web.engine.connect() as conn:
        try:
            return profiles.get_id(conn, customer_id)
        except NotFound:
            return None


async def _fields(request: Request, limit: int) -> dict[str, Any]:
    """The posted fields, from a urlencoded form or a JSON object, read up to ``limit``."""
    kind = _content_type(request)
    if kind not in ("application/x-www-form-urlencoded", "application/json"):
        raise FormProblem(
            415, "", "send the form as application/x-www-form-urlencoded or application/json"
        )
    body = await _body(request, limit)
    try:
        text = body.decode("utf-8")
        if kind == "application/json":
            found = json.loads(text)
            if not isinstance(found, dict):
                raise FormProblem(400, "", "the JSON body must be an object of fields")
            return found
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormProblem(400, "", "the form could not be read (not UTF-8 or not JSON)") from None
    except ValueError:
        raise FormProblem(400, "", f"the form has more than {MAX_FIELDS} fields") from None


async def _body(request: Request, limit: int) -> bytes:
    too_large = FormProblem(413, "", f"the form is larger than {limit} bytes")
    declared = whole_number(request.headers.get("content-length", ""))
    if declared is not None and declared > limit:  # a length past any id: left to the count
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _accepted(
    request: Request, form: str, locale: str | None, as_json: bool, origin: str | None
) -> Response:
    """202 for a script; for a browser, a 303 to the website's page or our own."""
    if as_json:
        return JSONResponse({"status": "accepted"}, 202, headers=_cors(origin))
    target = getattr(_settings(request), f"{form}_thanks_url")
    if not target:
        lang = (
            customer_words.language(locale)
            if locale
            else customer_words.from_header(request.headers.get("accept-language", ""))
        )
        target = f"/forms/thanks/{form}?lang={lang}"
    return RedirectResponse(target, 303, headers=_cors(origin))


def _refused(request: Request, problem: FormProblem, as_json: bool, origin: str | None) -> Response:
    if as_json:
        body = {"error": problem.message, "field": problem.field or None}
        return JSONResponse(body, problem.status, headers=_cors(origin))
    return _problem_page(request, problem.message, problem.status, _cors(origin))


def _too_many(request: Request, verdict: Verdict, as_json: bool, origin: str | None) -> Response:
    message = f"too many posts; try again in {verdict.retry_after} seconds"
    headers = _cors(origin) | {"Retry-After": str(verdict.retry_after)}
    if as_json:
        return JSONResponse({"error": message, "field": None}, 429, headers=headers)
    return _problem_page(request, message, 429, headers)


def _problem_page(request: Request, message: str, status: int, headers: dict[str, str]) -> Response:
    lang = customer_words.from_header(request.headers.get("accept-language", ""))
    title = customer_words.WORDS[lang]["form_problem"]
    return _page(request, lang, title, message.capitalize() + ".", status=status, headers=headers)


def _page(
    request: Request,
    lang: str,
    title: str,
    text: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    action: str | None = None,
    button: str | None = None,
) -> Response:
    """A page in the company's frame; the staff session is neither read nor written."""
    context = {"title": title, "text": text, "action": action, "button": button}
    return state(request).templates.TemplateResponse(
        request,
        "form_answer.html",
        context | framing(request, lang),
        status_code=status,
        headers=headers,
    )


def _not_valid(request: Request) -> Response:
    lang = customer_words.from_header(request.headers.get("accept-language", ""))
    return state(request).templates.TemplateResponse(
        request, "link_not_valid.html", framing(request, lang), status_code=404
    )


def _cors(origin: str | None) -> dict[str, str]:
    allowed = {"Access-Control-Allow-Origin": origin} if origin else {}
    return allowed | {"Vary": "Origin"}


def _settings(request: Request) -> FormsSettings:
    return state(request).cfg.settings.forms


def _policy(request: Request) -> AckPolicy:
    """The acknowledgement policy, read from the config once per app."""
    policy = getattr(request.app.state, "ack_policy", None)
    if not isinstance(policy, AckPolicy):
        policy = AckPolicy.from_config(state(request).cfg)
        request.app.state.ack_policy = policy
    return policy


def _confirm_url(web: WebState, token: str) -> str:
    return f"{web.cfg.settings.web.base_url.rstrip('/')}/forms/confirm/{token}"


routes = [
    Route("/forms/inquiry", inquiry, methods=["POST"]),
    Route("/forms/subscribe", subscribe, methods=["POST"]),
    Route("/forms/inquiry", preflight, methods=["OPTIONS"]),
    Route("/forms/subscribe", preflight, methods=["OPTIONS"]),
    Route("/forms/thanks/{form}", thanks, methods=["GET"]),
    Route("/forms/confirm/{token}", confirm_page, methods=["GET"]),
    Route("/forms/confirm/{token}", confirm, methods=["POST"]),
]
