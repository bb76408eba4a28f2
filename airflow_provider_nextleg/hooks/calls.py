"""The calls of the NextLeg v2 API, each built, and its arguments checked, before anything is sent.

One builder per endpoint returns an :class:`~airflow_provider_nextleg.hooks.transport.ApiCall`; the hook's
methods send them, and an operator builds its call once (every argument checked where it enters) and
sends it with :meth:`NextLegHook.request <airflow_provider_nextleg.hooks.nextleg.NextLegHook.request>`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from airflow_provider_nextleg import validation
from airflow_provider_nextleg.get_provider_info import DEFAULT_EXPIRE_MINS
from airflow_provider_nextleg.hooks.transport import ApiCall
from airflow_provider_nextleg.models import Message, NaughtyResult, SubmitResult, parse_seed, parse_url

# GET /v2/message/<this> answers 404 with a valid token: free proof that the token works.
_PROBE_MESSAGE_ID = "airflowConnTest00000"


def _fields(**values: Any) -> dict[str, Any]:
    """A request body without the options left out (None)."""
    return {name: value for name, value in values.items() if value is not None}


def _options(ref: str | None, webhook_override: str | None) -> dict[str, Any]:
    """The ``ref`` and ``webhookOverride`` every job-starting call takes, checked."""
    options = {}
    if ref is not None:
        options["ref"] = validation.check_ref(ref)
    if webhook_override is not None:
        options["webhookOverride"] = validation.check_url(webhook_override, name="webhook_override")
    return options


def _submission(
    method: str, path: str, body: dict[str, Any], *, ref: str | None = None, route_id: str | None = None
) -> ApiCall[SubmitResult]:
    json, params = (None, body or None) if method == "GET" else (body, None)
    return ApiCall(
        method, path, SubmitResult.from_api, json, params, submits_job=True, ref=ref, route_id=route_id
    )


def imagine(
    prompt: str, ref: str | None, webhook_override: str | None, ignore_prefilter: bool | None
) -> ApiCall[SubmitResult]:
    body = {"msg": validation.check_prompt(prompt), **_options(ref, webhook_override)}
    # The docs send the string "true"; "false" would read as true to a truthiness check, so False is
    # sent as no field at all (the prefilter's default).
    if ignore_prefilter is not None and validation.check_flag(ignore_prefilter, name="ignore_prefilter"):
        body["ignorePrefilter"] = "true"
    return _submission("POST", "/v2/imagine", body, ref=ref)


def button(
    button: str,
    button_message_id: str,
    ref: str | None,
    webhook_override: str | None,
    prompt: str | None = None,
    zoom: float | None = None,
    ar: str | None = None,
    *,
    mask: bytes | None = None,
    route_id: str | None = None,
) -> ApiCall[SubmitResult]:
    """A press of ``button`` on a finished result; ``route_id`` is the result's, through a pool."""
    checked_mask = validation.check_button_options(
        validation.check_text(button, name="button"), zoom, ar, prompt, mask
    )
    body = {
        "button": button,
        "buttonMessageId": validation.check_message_id(button_message_id, name="button_message_id"),
        **_options(ref, webhook_override),
        **_fields(prompt=prompt, zoom=zoom, ar=ar),
    }
    if checked_mask is not None:
        body["mask"] = base64.b64encode(checked_mask).decode()
    return _submission("POST", "/v2/button", body, ref=ref, route_id=_route(route_id))


def message(message_id: str, expire_mins: int, route_id: str | None = None) -> ApiCall[Message]:
    """A poll of a job; ``route_id`` is its submission's, through a pool."""
    message_id = validation.check_message_id(message_id)
    return ApiCall(
        "GET",
        f"/v2/message/{message_id}",
        lambda payload: Message.from_api(payload, message_id),
        params={"expireMins": validation.check_expire_mins(expire_mins)},
        message_id=message_id,
        route_id=_route(route_id),
    )


def upscale_image_url(button: str, button_message_id: str) -> ApiCall[str]:
    """The URL of one image (``U1`` to ``U4``) of a finished grid, at once, without a job."""
    params = {
        "button": validation.check_text(button, name="button"),
        "buttonMessageId": validation.check_message_id(button_message_id, name="button_message_id"),
    }
    return ApiCall("GET", "/upscale-img-url", parse_url, params=params, message_id=button_message_id)


def face_swap(source_img: str, target_img: str) -> ApiCall[bytes]:
    """The target picture with the source picture's face, as image bytes (no job)."""
    body = {
        "sourceImg": validation.check_url(source_img, name="source_img"),
        "targetImg": validation.check_url(target_img, name="target_img"),
    }
    return ApiCall("POST", "/face-swap", bytes, json=body, raw=True)


def _route(route_id: str | None) -> str | None:
    return None if route_id is None else validation.check_message_id(route_id, name="route_id")


def seed(message_id: str) -> ApiCall[str]:
    body = {"messageId": validation.check_message_id(message_id)}
    return ApiCall("POST", "/v2/seed", parse_seed, json=body, message_id=message_id)


def describe(url: str, ref: str | None, webhook_override: str | None) -> ApiCall[SubmitResult]:
    body = {"url": validation.check_url(url, name="url"), **_options(ref, webhook_override)}
    return _submission("POST", "/v2/describe", body, ref=ref)


def blend(urls: Sequence[str], ref: str | None, webhook_override: str | None) -> ApiCall[SubmitResult]:
    body = {"urls": validation.check_blend_urls(urls), **_options(ref, webhook_override)}
    return _submission("POST", "/v2/blend", body, ref=ref)


def info(ref: str | None, webhook_override: str | None) -> ApiCall[SubmitResult]:
    return _submission("GET", "/v2/info", _options(ref, webhook_override), ref=ref)


def toggle_setting(toggle: str) -> ApiCall[SubmitResult]:
    body = {"settingsToggle": validation.check_text(toggle, name="toggle")}
    return _submission("POST", "/v2/settings", body)


def slash_command(cmd: str) -> ApiCall[SubmitResult]:
    return _submission("POST", "/v2/slash-commands", {"cmd": validation.check_slash_command(cmd)})


def is_this_naughty(prompt: str) -> ApiCall[NaughtyResult]:
    body = {"msg": validation.check_prompt(prompt)}
    return ApiCall("POST", "/v2/is-this-naughty", NaughtyResult.from_api, json=body)


def get_image(img_url: str) -> ApiCall[bytes]:
    body = {"imgUrl": validation.check_url(img_url, name="img_url")}
    return ApiCall("POST", "/getImage", bytes, json=body, raw=True)


SETTINGS: ApiCall[SubmitResult] = _submission("GET", "/v2/settings", {})
PROBE: ApiCall[Message] = message(_PROBE_MESSAGE_ID, DEFAULT_EXPIRE_MINS)
