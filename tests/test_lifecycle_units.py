"""
The request lifecycle's pure steps, tested without a reactor: the request
target and upstream URL (no target may move the server key to another host),
the parse step (request view, model rewrite, label bounds), the classify step
(outcomes and the provider's own error) and the one secret mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers

from lunaroute.config import settings_from_mapping
from lunaroute.dialects.capture import ResponseCapture
from lunaroute.dialects.request_view import (
    MAX_LABEL_CHARS,
    BadRequestBody,
    bounded,
    parse_request,
    replace_model,
)
from lunaroute.providers.http import HTTPProvider
from lunaroute.providers.url import BadTarget, UpstreamBase, split_target
from lunaroute.proxy.headers import masked_headers
from lunaroute.proxy.outcome import RelayEnd, classify_relay, provider_error
from lunaroute.proxy.relay import describe_loss
from lunaroute.secrets import is_secret_name, mask_value, masked_header_items

STREAMS = Path(__file__).parent / "fixtures" / "streams"

# Every target a client could send to move a request off the provider's
# origin: relative, host-looking, userinfo, scheme-relative, absolute form,
# CONNECT's authority form, control bytes, non-ASCII, backslash.
HOSTILE_TARGETS = [
    b"1/steal",
    b".evil.example/x",
    b"@evil/x",
    b"//evil/x",
    b"http://evil/x",
    b"https://evil.example/v1/messages",
    b"evil:443",
    b"*",
    b"/v1/messages\r\nHost: evil",
    b"/v1/\x00messages",
    b"/v1/\x7fmessages",
    b"/v1/messages\tx",
    b"/v1/caf\xc3\xa9",
    b"/v1/\xffx",
    # Dot segments, plain or percent-encoded, would climb out of the base
    # URL's path prefix on a server that normalises them.
    b"/v1/../../admin",
    b"/v1/./messages",
    b"/..//evil/x",
    b"/v1/%2e%2e/admin",
    b"/v1/%2E./admin",
    b"/v1/messages%2f..%2fadmin",
    b"/v1/messages%5c..%5cadmin",
    b"/v1/..",
    b"/v1\\..\\evil",
    b"\\\\evil\\x",
    b"/v1/messages#frag",
    b"/v1/messages x",
    b"",
]


def _provider(name: str, **settings: object) -> HTTPProvider:
    config = settings_from_mapping({"providers": {name: settings}}, env={})
    return HTTPProvider(config.providers[name], reactor=Clock())


# -- split_target --------------------------------------------------------


def test_origin_form_target_is_split_into_path_and_query() -> None:
    """Claude Code's '/v1/messages?beta=true' is accepted and split at the first '?'."""
    assert split_target(b"/v1/messages?beta=true") == (b"/v1/messages", b"beta=true")
    assert split_target(b"/v1/models") == (b"/v1/models", b"")
    assert split_target(b"/x?a=1?b=2") == (b"/x", b"a=1?b=2")


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_every_target_not_in_origin_form_is_refused(target: bytes) -> None:
    """Relative, '@host', '//host', absolute, authority form, control, non-ASCII and backslash targets raise BadTarget (a 400)."""
    with pytest.raises(BadTarget) as caught:
        split_target(target)
    assert caught.value.status == 400
    assert caught.value.message


def test_dots_that_are_not_whole_segments_are_kept() -> None:
    """Model ids and names with dots ('claude-3.5', '.well-known', 'a..b') are ordinary paths; a query may hold anything."""
    for target in (b"/v1/models/claude-3.5-sonnet", b"/.well-known/x", b"/v1/a..b", b"/v1/..."):
        assert split_target(target) == (target, b"")
    assert split_target(b"/v1/messages?next=/../x") == (b"/v1/messages", b"next=/../x")


def test_percent_encoded_crlf_stays_in_the_path() -> None:
    """'%0d%0a' is just path text: accepted, not decoded, so it cannot inject a header or a host."""
    path, query = split_target(b"/v1/%0d%0aHost:%20evil.example?x=%0d%0a")
    assert path == b"/v1/%0d%0aHost:%20evil.example"
    assert query == b"x=%0d%0a"
    url = UpstreamBase.parse("https://api.anthropic.com").url(path, query)
    assert url == b"https://api.anthropic.com/v1/%0d%0aHost:%20evil.example?x=%0d%0a"


# -- UpstreamBase --------------------------------------------------------


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_upstream_url_refuses_every_hostile_path(target: bytes) -> None:
    """No hostile path yields a URL: BadTarget is raised before any URL exists (never port 10001)."""
    base = UpstreamBase.parse("http://127.0.0.1:1000")
    with pytest.raises(BadTarget):
        base.url(target)


@pytest.mark.parametrize(
    "path",
    [b"/v1/messages", b"/@evil.example/x", b"/:443/x", b"/v1/%2f%2fevil/x", b"/.evil.example", b"/v1/a..b/..."],
)
@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:1000", "https://api.anthropic.com", "http://[::1]:8080/v1", "https://h.example:8443/prefix/"],
)
def test_upstream_url_keeps_scheme_host_and_port(base_url: str, path: bytes) -> None:
    """Odd but origin-form paths stay paths: the URL keeps the base's scheme, host and port."""
    from twisted.web.client import URI

    base = UpstreamBase.parse(base_url)
    url = base.url(path, b"beta=true")
    parsed = URI.fromBytes(url)
    assert (parsed.scheme.decode(), parsed.host, parsed.port) == (base.scheme, base.host, base.port)
    assert url.endswith(path + b"?beta=true")


def test_server_key_base_with_relative_target_never_reaches_port_10001() -> None:
    """The issue's reproduction: base :1000 plus '1/steal' raised BadTarget instead of naming :10001."""
    provider = _provider("anthropic", base_url="http://127.0.0.1:1000", api_key="sk-ant-server-key-1234")
    with pytest.raises(BadTarget):
        provider.upstream_url("1/steal")
    with pytest.raises(BadTarget):
        provider.upstream_url(".evil.example/x")
    assert provider.upstream_url("/v1/messages") == b"http://127.0.0.1:1000/v1/messages"


def test_openai_base_with_v1_prefix_takes_the_client_path_once() -> None:
    """An OpenAI base ending in /v1 maps '/v1/chat/completions' and '/responses' under it, once."""
    provider = _provider("openai", base_url="https://api.openai.com/v1")
    assert provider.upstream_url("/v1/chat/completions") == b"https://api.openai.com/v1/chat/completions"
    assert provider.upstream_url("/responses", b"a=1") == b"https://api.openai.com/v1/responses?a=1"
    assert provider.upstream_url("/v1") == b"https://api.openai.com/v1/"
    with pytest.raises(BadTarget):
        provider.upstream_url("/v1/.evil/x\\y")


def test_openai_base_without_prefix_keeps_the_client_v1() -> None:
    """A bare OpenAI origin (no /v1 in the base) gets the client's '/v1/...' path whole."""
    provider = _provider("openai", base_url="http://127.0.0.1:9/")
    assert provider.upstream_url("/v1/chat/completions") == b"http://127.0.0.1:9/v1/chat/completions"


def test_base_url_must_be_http() -> None:
    """A base URL without an http(s) scheme or host is refused when parsed."""
    for bad in ("ftp://x/", "127.0.0.1:1000", "http:///nohost"):
        with pytest.raises(ValueError):
            UpstreamBase.parse(bad)


# -- replace_model -------------------------------------------------------


def test_replace_model_changes_only_the_model_value() -> None:
    """Odd spacing and key order survive: only the bytes of the model value change."""
    body = b'{ "stream":false,"model" : "claude-x",  "max_tokens":5,\n "messages":[]}'
    assert replace_model(body, "claude-y") == body.replace(b'"claude-x"', b'"claude-y"')


def test_replace_model_leaves_nested_model_keys_and_unicode_alone() -> None:
    """'model' keys inside messages or metadata and raw/escaped unicode are untouched."""
    body = (
        b'{"messages":[{"role":"user","content":"caf\xc3\xa9 \\u00e9 \xf0\x9f\x8c\x99","model":"inner"}],'
        b'"metadata":{"model":"meta"},"model":"outer","tools":[]}'
    )
    out = replace_model(body, "m\u00fcnchen-\u2603")
    assert out == body.replace(b'"outer"', '"m\u00fcnchen-\u2603"'.encode())
    parsed = json.loads(out)
    assert parsed["model"] == "m\u00fcnchen-\u2603"
    assert parsed["messages"][0]["model"] == "inner"
    assert parsed["metadata"]["model"] == "meta"


def test_replace_model_replaces_every_duplicate_top_level_key() -> None:
    """With duplicate top-level 'model' keys, each is replaced: no parser sees the client's value."""
    out = replace_model(b'{"model":"a","x":1,"model":"b"}', "c")
    assert out == b'{"model":"c","x":1,"model":"c"}'


def test_replace_model_handles_escapes_and_whitespace_around_the_object() -> None:
    """Escaped quotes inside the old value and whitespace around the object do not confuse the splice."""
    assert replace_model(b'{"model":"a\\"b\\\\"}', "c") == b'{"model":"c"}'
    assert replace_model(b'\n\t{\n "model"\n:\n"a"\n}\n', "c") == b'\n\t{\n "model"\n:\n"c"\n}\n'


def test_replace_model_value_is_json_escaped() -> None:
    """A configured model with quotes cannot break the JSON it is spliced into."""
    out = replace_model(b'{"model":"a","n":1}', 'x"y')
    assert json.loads(out) == {"model": 'x"y', "n": 1}


# -- parse_request -------------------------------------------------------


def _no_headers(name: str) -> None:
    return None


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"\xff\xfe", b"[1]", b'"model"', b"null", b'{"x":1}', b'{"model":""}', b'{"model":5}'],
)
def test_parse_request_refuses_bodies_that_are_not_model_calls(body: bytes) -> None:
    """Bad JSON, a non-object or a missing/empty/non-string model is BadRequestBody (a 400)."""
    with pytest.raises(BadRequestBody) as caught:
        parse_request("anthropic", body, _no_headers)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"x":1}', "model: field required"),
        (b'{"model":null}', "model: field required"),
        (b'{"model":5}', "model: expected a non-empty string, got a number"),
        (b'{"model":""}', "model: expected a non-empty string, got an empty string"),
        (b'{"model":["a"]}', "model: expected a non-empty string, got an array"),
        (b'{"model":true}', "model: expected a non-empty string, got a boolean"),
    ],
)
def test_a_bad_model_is_named_for_what_it_is(body: bytes, message: str) -> None:
    """A missing model and a model of the wrong type get different messages."""
    with pytest.raises(BadRequestBody) as caught:
        parse_request("anthropic", body, _no_headers)
    assert str(caught.value) == message


@pytest.mark.parametrize("depth", [1000, 5000, 100_000])
def test_deeply_nested_body_is_a_bad_request_not_a_recursion_error(depth: int) -> None:
    """JSON nested 1000+ deep raises BadRequestBody, never RecursionError."""
    deep = b"[" * depth + b"]" * depth
    for body in (deep, b'{"model":"m","messages":' + deep + b"}"):
        with pytest.raises(BadRequestBody, match="nested too deeply"):
            parse_request("anthropic", body, _no_headers)


def test_parse_request_reads_model_stream_and_session() -> None:
    """The view carries the model, stream flag, parsed body and the assistant's session id."""
    view = parse_request(
        "anthropic",
        b'{"model":"claude-x","stream":true,"messages":[]}',
        lambda name: "sess-1" if name == "x-claude-code-session-id" else None,
    )
    assert (view.dialect, view.model, view.stream) == ("anthropic", "claude-x", True)
    assert view.json == {"model": "claude-x", "stream": True, "messages": []}


def test_unparsed_request_needs_no_json() -> None:
    """Bypass and model listings are not parsed: any body is fine."""
    view = parse_request(None, b"\x00not json", _no_headers, parse_json=False)
    assert view.model is None and view.json is None


def test_bounded_cuts_labels() -> None:
    """bounded() keeps short values and None, and cuts long ones to MAX_LABEL_CHARS with an ellipsis."""
    assert bounded(None) is None
    assert bounded("claude") == "claude"
    cut = bounded("m" * 1_000_000)
    assert cut is not None and len(cut) == MAX_LABEL_CHARS and cut.endswith("…")
    assert bounded("abcdef", limit=4) == "abc…"
    view = parse_request("anthropic", json.dumps({"model": "m" * 100_000}).encode(), _no_headers)
    assert view.model_label is not None and len(view.model_label) == MAX_LABEL_CHARS


# -- classify ------------------------------------------------------------


def _summary(dialect: str, body: bytes, content_type: str) -> object:
    capture = ResponseCapture(dialect, streaming=content_type.startswith("text/event-stream"), content_type=content_type)
    capture.feed(body)
    return capture.finish()


def test_clean_answer_is_ok() -> None:
    """A 200 whose body ended properly, with no error inside, is 'ok' with no error."""
    summary = _summary(
        "anthropic",
        b'{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],'
        b'"model":"m","stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}',
        "application/json",
    )
    verdict = classify_relay(200, RelayEnd(bytes_relayed=10), summary)
    assert (verdict.outcome, verdict.error, verdict.error_type) == ("ok", None, None)
    assert verdict.complete
    assert classify_relay(200, RelayEnd(), None).outcome == "ok"


def test_anthropic_429_carries_the_provider_error_type_and_message() -> None:
    """An Anthropic 429 body gives error_type 'rate_limit_error' and the provider's message."""
    summary = _summary("anthropic", (STREAMS / "anthropic_error.json").read_bytes(), "application/json")
    assert provider_error(summary) == (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50,000 input tokens per minute.",
    )
    verdict = classify_relay(429, RelayEnd(bytes_relayed=200), summary)
    assert verdict.outcome == "upstream_error"
    assert verdict.error_type == "rate_limit_error"
    assert verdict.error is not None and verdict.error.startswith("This request would exceed")
    assert verdict.complete


def test_anthropic_529_overloaded_carries_type_and_message() -> None:
    """A 529 overloaded body is upstream_error 'overloaded_error' / 'Overloaded'."""
    summary = _summary(
        "anthropic", b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "application/json"
    )
    verdict = classify_relay(529, RelayEnd(), summary)
    assert (verdict.outcome, verdict.error_type, verdict.error) == ("upstream_error", "overloaded_error", "Overloaded")


def test_openai_429_carries_the_provider_error_type_and_message() -> None:
    """An OpenAI error body gives its type and message."""
    summary = _summary("openai_chat", (STREAMS / "openai_error.json").read_bytes(), "application/json")
    error_type, message = provider_error(summary)
    assert error_type == "tokens"
    assert message is not None and message.startswith("Rate limit reached for gpt-4.1")
    verdict = classify_relay(429, RelayEnd(), summary)
    assert verdict.outcome == "upstream_error" and verdict.error == message and verdict.error_type == "tokens"


def test_error_status_without_a_body_still_says_the_status() -> None:
    """A 500 with no readable body is upstream_error 'the provider answered 500', not an empty column."""
    verdict = classify_relay(500, RelayEnd(), None)
    assert (verdict.outcome, verdict.error) == ("upstream_error", "the provider answered 500")


def test_anthropic_error_event_midstream_is_a_failure() -> None:
    """A 200 stream ending in 'event: error' is upstream_error with the event's type and message."""
    summary = _summary("anthropic", (STREAMS / "anthropic_overloaded.sse").read_bytes(), "text/event-stream")
    verdict = classify_relay(200, RelayEnd(bytes_relayed=900), summary)
    assert (verdict.outcome, verdict.error_type, verdict.error) == ("upstream_error", "overloaded_error", "Overloaded")


def test_openai_error_chunk_midstream_is_a_failure() -> None:
    """A 200 Chat Completions stream with an error chunk is upstream_error with that error."""
    body = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-5",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","param":null,"code":null}}\n\n'
    )
    summary = _summary("openai_chat", body, "text/event-stream")
    verdict = classify_relay(200, RelayEnd(bytes_relayed=len(body)), summary)
    assert verdict.outcome == "upstream_error"
    assert verdict.error_type == "server_error"
    assert verdict.error == "The server had an error while processing your request."


def test_responses_failed_event_carries_its_error() -> None:
    """provider_error reads a Responses 'response.failed' payload's error too."""

    class Summary:
        error = {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}

    assert provider_error(Summary()) == ("server_error", "boom")  # type: ignore[arg-type]
    assert provider_error(None) == (None, None)


def test_provider_closing_midstream_is_a_readable_sentence() -> None:
    """A body cut by the provider is stream_error 'the provider closed the connection after 1,234 bytes'."""
    lost = describe_loss(Failure(ResponseFailed([Failure(ConnectionDone())])))
    verdict = classify_relay(200, RelayEnd(bytes_relayed=1234, upstream_lost=lost), None)
    assert verdict.outcome == "stream_error"
    assert verdict.error == "the provider closed the connection after 1,234 bytes"
    assert not verdict.complete
    reset = describe_loss(Failure(ResponseFailed([Failure(ConnectionLost())])))
    assert classify_relay(200, RelayEnd(1, upstream_lost=reset), None).error == (
        "the provider reset the connection after 1 byte"
    )


@pytest.mark.parametrize(
    "reason",
    [
        Failure(ResponseFailed([Failure(ConnectionDone())])),
        Failure(ResponseFailed([Failure(ConnectionLost())])),
        Failure(ResponseFailed([Failure(ValueError())])),
        Failure(ResponseFailed([])),
        Failure(RuntimeError("boom")),
        Failure(ConnectionLost()),
    ],
)
def test_loss_descriptions_are_never_failure_reprs(reason: Failure) -> None:
    """describe_loss never returns a Failure repr ('Failure', '<', '[')."""
    text = describe_loss(reason)
    assert text and "Failure" not in text and "<" not in text and not text.startswith("[")


def test_timeout_client_gone_and_gateway_cut_are_distinct_outcomes() -> None:
    """Idle timeout, a departed client and a gateway cut each get their own outcome and sentence."""
    timeout = classify_relay(200, RelayEnd(bytes_relayed=10, timed_out=True), None)
    assert timeout.outcome == "timeout" and "after 10 bytes" in (timeout.error or "")
    gone = classify_relay(200, RelayEnd(bytes_relayed=2048, client_gone=True), None)
    assert gone.outcome == "client_disconnected" and gone.error == "the client went away after 2,048 bytes of the response"
    cut = classify_relay(200, RelayEnd(bytes_relayed=5, cut_by_gateway=True, upstream_lost="was cancelled"), None)
    assert cut.outcome == "interrupted" and "gateway stopped" in (cut.error or "")
    for verdict in (timeout, gone, cut):
        assert not verdict.complete
        assert "Failure" not in (verdict.error or "") and "<" not in (verdict.error or "")


# -- secrets -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "x-goog-api-key",
        "X-Auth-Token",
        "x-api-key",
        "authorization",
        "Authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "client_secret",
        "accessToken",
        "api-key",
        "apiKey",
        "x-amz-security-token",
        "password",
    ],
)
def test_credential_names_are_secret(name: str) -> None:
    """Every header or key named like a credential is a secret."""
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["max_tokens", "input_tokens", "output_tokens", "content-type", "user-agent", "anthropic-version", "model"],
)
def test_ordinary_names_are_not_secret(name: str) -> None:
    """Token counts and ordinary headers stay readable."""
    assert not is_secret_name(name)


def test_mask_value_hides_the_secret_but_keeps_the_scheme() -> None:
    """Long secrets keep four characters at each end, short ones none; 'Bearer' stays readable; masking twice changes nothing."""
    secret = "AIzaSyD-this-is-a-google-key-1234"
    masked = mask_value(secret)
    assert secret not in masked and masked.startswith("AIza") and masked.endswith("1234")
    assert mask_value("short") == "***"
    bearer = mask_value("Bearer sk-ant-abcdefghijklmnop")
    assert bearer.startswith("Bearer ") and "abcdefghijklmnop" not in bearer
    assert mask_value(masked) == masked
    assert mask_value(None) is None
    assert mask_value(12345) == "***"


def test_masked_headers_hide_google_and_auth_token_values() -> None:
    """proxy.headers.masked_headers masks x-goog-api-key and X-Auth-Token (the old list let both through)."""
    google = b"AIzaSyD-google-secret-value-0001"
    auth = b"tok-auth-secret-value-0002"
    headers = Headers(
        {
            b"x-goog-api-key": [google],
            b"X-Auth-Token": [auth],
            b"content-type": [b"application/json"],
            b"user-agent": [b"claude-cli/2.0 \xe9"],
        }
    )
    masked = masked_headers(headers)
    text = json.dumps(masked)
    assert google.decode() not in text and auth.decode() not in text
    assert masked["content-type"] == "application/json"
    assert masked["user-agent"] == "claude-cli/2.0 \xe9"
    assert set(masked) == {"x-goog-api-key", "x-auth-token", "content-type", "user-agent"}
    items = masked_header_items([(b"Set-Cookie", [b"session=abcdefghijklmnop", b"b=2"])])
    assert "abcdefghijklmnop" not in items["set-cookie"]
