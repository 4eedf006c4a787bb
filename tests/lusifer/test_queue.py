"""The Celery app: at-least-once delivery of idempotent jobs, JSON only, stable task names."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from celery import current_app

from lusifer.core.errors import ConfigurationError
from lusifer.core.settings import Settings
from lusifer.queue import (
    BASELINE_TASK,
    ENV_STEP_TASK,
    PROFILE_TASK,
    RATING_TASK,
    TASK_BY_KIND,
    make_celery,
)
from lusifer.store.tables import JobKind

BROKER = "redis://broker.example:6379/0"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from the arguments and defaults only: no LUSIFER_* variables, no .env file."""
    for name in list(os.environ):
        if name.startswith("LUSIFER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _settings(**fields: Any) -> Settings:
    return Settings(**{"broker_url": BROKER, **fields})


def test_delivery_is_at_least_once() -> None:
    conf = make_celery(_settings()).conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1


def test_visibility_timeout_is_longer_than_a_job() -> None:
    conf = make_celery(_settings()).conf
    assert conf.broker_transport_options["visibility_timeout"] >= 3600


def test_visibility_timeout_comes_from_settings() -> None:
    conf = make_celery(_settings(visibility_timeout_s=7 * 3600)).conf
    assert conf.broker_transport_options["visibility_timeout"] == 7 * 3600


def test_json_only_and_no_results() -> None:
    conf = make_celery(_settings()).conf
    assert conf.task_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.result_serializer == "json"
    assert conf.event_serializer == "json"
    assert conf.task_ignore_result is True


def test_broker_and_queue_come_from_settings() -> None:
    app = make_celery(_settings(queue="jobs-7"))
    assert app.conf.broker_url == BROKER
    assert app.conf.task_default_queue == "jobs-7"


def test_explicit_broker_url_wins() -> None:
    app = make_celery(_settings(), broker_url="redis://elsewhere:6380/1")
    assert app.conf.broker_url == "redis://elsewhere:6380/1"


def test_app_is_not_made_current() -> None:
    app = make_celery(_settings())
    assert current_app._get_current_object() is not app


def test_plain_redis_has_no_tls() -> None:
    assert not make_celery(_settings()).conf.broker_use_ssl


def test_rediss_gets_tls_with_certificate_checks() -> None:
    app = make_celery(_settings(broker_url="rediss://:pw@broker.example:6380/0"))
    tls = app.conf.broker_use_ssl
    assert tls
    assert tls["ssl_cert_reqs"] in ("required", ssl.CERT_REQUIRED)


def test_rediss_given_explicitly_gets_tls() -> None:
    app = make_celery(_settings(), broker_url="rediss://broker.example:6380/0")
    assert app.conf.broker_use_ssl


def test_task_names_are_distinct_and_stable() -> None:
    # Workers on other hosts and older coordinators send by these names: they must not change.
    assert PROFILE_TASK == "lusifer.profile"
    assert RATING_TASK == "lusifer.rate"
    assert BASELINE_TASK == "lusifer.baseline"
    assert len({PROFILE_TASK, RATING_TASK, BASELINE_TASK, ENV_STEP_TASK}) == 4
    kinds = {JobKind.PROFILE, JobKind.RATING, JobKind.BASELINE}
    assert set(TASK_BY_KIND) == kinds == {"profile", "rating", "baseline"}
    assert TASK_BY_KIND[JobKind.PROFILE] == PROFILE_TASK
    assert TASK_BY_KIND[JobKind.RATING] == RATING_TASK
    assert TASK_BY_KIND[JobKind.BASELINE] == BASELINE_TASK


def test_tls_options_in_the_url_become_redis_ssl_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    url = f"rediss://:pw@broker.example:6380/0?ssl_cert_reqs=CERT_OPTIONAL&ssl_ca_certs={ca}"
    app = make_celery(_settings(broker_url=url))
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_OPTIONAL, "ssl_ca_certs": str(ca)}
    # The options are taken out of the URL, so Celery and kombu see them once.
    assert app.conf.broker_url == "rediss://:pw@broker.example:6380/0"


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("redis://broker.example:6379/0?ssl_cert_reqs=required", "not rediss://"),
        ("rediss://broker.example:6380/0?ssl_cert_reqs=maybe", "required, optional, none"),
        ("rediss://broker.example:6380/0?ssl_ca_certs=/nonexistent/ca.pem", "is not a file"),
        ("rediss://broker.example:6380/0?ssl_verify=yes", "unknown TLS option ssl_verify"),
    ],
)
def test_bad_tls_options_are_one_line_errors(url: str, phrase: str) -> None:
    with pytest.raises(ConfigurationError, match="LUSIFER_BROKER_URL") as err:
        make_celery(_settings(broker_url=url))
    assert phrase in str(err.value) and "\n" not in str(err.value)
