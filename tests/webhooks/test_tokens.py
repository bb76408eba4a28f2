"""Job keys, tokens and the receiver's URL: what the operator sends and the receiver checks."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_nextleg.exceptions import NextLegInputError
from airflow_provider_nextleg.webhooks import tokens
from airflow_provider_nextleg.webhooks.config import WebhookConfig

from .support import CONN_ID, SECRET, ref_for


class TestTokens:
    def test_a_url_names_the_connection_and_the_job_and_carries_the_token_in_the_query(self) -> None:
        key = tokens.new_job_key()
        url = tokens.webhook_override_url("https://airflow.example.com/nextleg/", CONN_ID, key, SECRET)
        parts = urlsplit(url)
        assert parts.path == f"/nextleg/webhook/{CONN_ID}/{key}"
        [token] = parse_qs(parts.query)["token"]
        assert tokens.verify_token(SECRET, CONN_ID, key, token)
        assert SECRET not in url

    def test_a_token_is_good_for_its_own_job_connection_and_secret_only(self) -> None:
        key, other = tokens.new_job_key(), tokens.new_job_key()
        token = tokens.job_token(SECRET, CONN_ID, key)
        assert tokens.verify_token(SECRET, CONN_ID, key, token)
        assert not tokens.verify_token(SECRET, CONN_ID, other, token)
        assert not tokens.verify_token(SECRET, "nextleg_other", key, token)
        assert not tokens.verify_token(SECRET + "x", CONN_ID, key, token)
        for forged in (None, "", token[:-1], token + "A", token.upper(), "é" * 43):
            assert not tokens.verify_token(SECRET, CONN_ID, key, forged)

    def test_job_keys_are_fresh_and_url_safe(self) -> None:
        keys = {tokens.new_job_key() for _ in range(1000)}
        assert len(keys) == 1000
        assert all(tokens.is_job_key(key) for key in keys)

    @pytest.mark.parametrize(
        ("base", "conn_id", "secret", "says"),
        [
            ("ftp://example.com", CONN_ID, SECRET, "http:// or https://"),
            ("https://example.com/?a=1", CONN_ID, SECRET, "no query"),
            ("https://user:pw@example.com", CONN_ID, SECRET, "credentials"),
            ("https://example.com", "bad/id", SECRET, "cannot be named"),
            ("https://example.com", CONN_ID, "short", "at least 16"),
        ],
    )
    def test_bad_parts_are_refused_without_showing_the_secret(
        self, base: str, conn_id: str, secret: str, says: str
    ) -> None:
        with pytest.raises(ValueError, match=says) as raised:
            tokens.webhook_override_url(base, conn_id, tokens.new_job_key(), secret)
        assert secret not in str(raised.value)

    @pytest.mark.parametrize(
        ("ref", "expected"),
        [
            (ref_for("k" * 20), "k" * 20),
            ({"job": "k" * 20}, "k" * 20),
            ('{"dag_id": "d"}', None),
            ("run-1", None),
            ("", None),
            (None, None),
            ('{"job": "short"}', None),
            ('["job"]', None),
        ],
    )
    def test_the_ref_names_the_job(self, ref: object, expected: str | None) -> None:
        assert tokens.ref_job_key(ref) == expected


class TestWebhookConfig:
    def test_reads_and_checks_the_extras_and_hides_the_secret(self) -> None:
        config = WebhookConfig.from_connection(
            CONN_ID, {"webhook_url": "https://h.example.com/nextleg/", "webhook_secret": SECRET}
        )
        assert config.enabled
        assert config.url == "https://h.example.com/nextleg"
        assert SECRET not in repr(config)
        key = tokens.new_job_key()
        url = config.override_url(key)
        assert config.verify(key, parse_qs(urlsplit(url).query)["token"][0])

    def test_a_secret_alone_receives_but_does_not_enable_webhooks(self) -> None:
        config = WebhookConfig.from_connection(CONN_ID, {"webhook_secret": SECRET})
        assert config.receives
        assert not config.enabled

    @pytest.mark.parametrize(
        ("extra", "says"),
        [
            ({"webhook_url": "https://h.example.com"}, "no webhook_secret"),
            ({"webhook_url": "h.example.com", "webhook_secret": SECRET}, "http:// or https://"),
            ({"webhook_secret": "tooshort"}, "shorter than 16"),
        ],
    )
    def test_bad_extras_are_input_errors(self, extra: dict[str, str], says: str) -> None:
        with pytest.raises(NextLegInputError, match=says) as raised:
            WebhookConfig.from_connection(CONN_ID, extra)
        assert "tooshort" not in str(raised.value)
