"""Redis URLs from an environment variable (a password from a secret stays out of the
Serve config): the queue store and the predictor read the same way and fail loudly."""

import pytest
from pydantic import ValidationError

from orchestrator.config import DurabilityConfig
from orchestrator.store import StoreConfig
from predictor_service.config import PredictorConfig
from predictor_service.core import PredictorCore
from augserve_common.redis_url import RedisUrlError, redacted, resolve_redis_url

URL = "redis://:s3cret@redis.augserve.svc:6379/0"


def test_the_url_comes_from_the_named_variable():
    assert resolve_redis_url(None, "AUGSERVE_REDIS_URL", {"AUGSERVE_REDIS_URL": URL}) == URL
    assert resolve_redis_url("redis://h:1/0", None, {}) == "redis://h:1/0"


@pytest.mark.parametrize("environ", [{}, {"AUGSERVE_REDIS_URL": "  "}])
def test_an_unset_variable_is_an_error_that_names_it(environ):
    with pytest.raises(RedisUrlError, match="AUGSERVE_REDIS_URL, which is not set"):
        resolve_redis_url(None, "AUGSERVE_REDIS_URL", environ)


def test_a_bad_url_in_the_variable_is_named_without_its_password():
    with pytest.raises(RedisUrlError, match=r"\$AUGSERVE_REDIS_URL must start with") as info:
        resolve_redis_url(None, "AUGSERVE_REDIS_URL", {"AUGSERVE_REDIS_URL": "http://:pw@h:1"})
    assert "pw" not in str(info.value)
    assert redacted(URL) == "redis://:***@redis.augserve.svc:6379/0"


@pytest.mark.parametrize("model", [StoreConfig, DurabilityConfig, PredictorConfig])
def test_url_and_variable_are_exclusive_and_the_name_is_checked(model):
    with pytest.raises(ValidationError, match="not both"):
        model(redis_url="redis://h:1/0", redis_url_env="AUGSERVE_REDIS_URL")
    with pytest.raises(ValidationError, match="redis_url_env"):
        model(redis_url_env="NOT-A-NAME")
    with pytest.raises(ValidationError, match="must start with"):
        model(redis_url="http://h:1")


def test_the_queue_store_reads_the_variable_at_start():
    durability = DurabilityConfig(mode="required", redis_url_env="AUGSERVE_REDIS_URL")
    store = durability.store_config({"AUGSERVE_REDIS_URL": URL})
    assert store.redis_url == URL and store.redis_url_env is None
    with pytest.raises(RedisUrlError):
        durability.store_config({})
    with pytest.raises(ValidationError, match="needs redis_url or redis_url_env"):
        DurabilityConfig(mode="required")


def test_the_predictor_reads_the_variable_at_start(monkeypatch):
    config = PredictorConfig(length_model="hashed-linear", redis_url_env="AUGSERVE_TEST_REDIS")
    monkeypatch.delenv("AUGSERVE_TEST_REDIS", raising=False)
    with pytest.raises(RedisUrlError, match="AUGSERVE_TEST_REDIS"):
        PredictorCore(config)
    monkeypatch.setenv("AUGSERVE_TEST_REDIS", URL)
    core = PredictorCore(config)
    assert core.config.redis_url == URL and core.store.kind == "redis"


def test_a_password_from_its_own_variable_may_hold_any_character():
    import redis
    password = "p@ss:w#rd/%?\n"  # a secret made from a file ends in a newline
    store = StoreConfig(redis_url_env="AUGSERVE_REDIS_URL",
                        redis_password_env="AUGSERVE_REDIS_PASSWORD").resolved(
        {"AUGSERVE_REDIS_URL": "redis://redis.svc:6379/0", "AUGSERVE_REDIS_PASSWORD": password})
    assert store.redis_password_env is None and "p@ss" not in store.redis_url
    kwargs = redis.ConnectionPool.from_url(store.redis_url).connection_kwargs
    assert kwargs["password"] == "p@ss:w#rd/%?" and kwargs["host"] == "redis.svc"
    assert redacted(store.redis_url) == "redis://:***@redis.svc:6379/0"


def test_a_socket_url_takes_the_password_in_its_query():
    import redis
    url = PredictorConfig(redis_url="unix:///tmp/r.sock?db=1",
                          redis_password_env="PW").resolved({"PW": "a&b"}).redis_url
    assert redis.ConnectionPool.from_url(url).connection_kwargs["password"] == "a&b"
    assert redacted(url) == "unix:///tmp/r.sock?db=1&password=***"


def test_password_variable_errors_are_named():
    with pytest.raises(ValidationError, match="redis_password_env needs redis_url"):
        StoreConfig(redis_password_env="PW")
    config = StoreConfig(redis_url="redis://h:1/0", redis_password_env="PW")
    with pytest.raises(RedisUrlError, match="redis_password_env names PW, which is not set"):
        config.resolved({})
    with pytest.raises(RedisUrlError, match="already has a password") as info:
        StoreConfig(redis_url="redis://:old@h:1/0", redis_password_env="PW").resolved({"PW": "x"})
    assert "old" not in str(info.value)
