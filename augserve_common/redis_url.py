"""Redis URLs of the queue store and the predictor: the scheme check, a URL read from an
environment variable (one that carries a password from a Kubernetes secret must not sit
in a Serve config, which anyone who can read the RayService sees), and a redacted form
for logs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Self
from urllib.parse import quote, urlparse, urlunparse

from pydantic import BaseModel, Field, field_validator, model_validator

SCHEMES = ("redis", "rediss", "unix")
#: What ``redis_url_env`` may name (a POSIX environment variable name).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class RedisUrlError(ValueError):
    """A Redis URL that is missing or malformed; the message names where it came from."""


def check_redis_url(url: str, source: str = "redis_url") -> str:
    if urlparse(url).scheme not in SCHEMES:
        raise RedisUrlError(f"{source} must start with redis://, rediss:// or unix://: "
                            f"{redacted(url)!r}")
    return url


def _from_env(name: str, what: str, environ: Mapping[str, str] | None) -> str:
    """The variable's value, newline-trimmed (a secret made from a file may end in one)."""
    value = (os.environ if environ is None else environ).get(name, "").rstrip("\r\n")
    if not value.strip():
        raise RedisUrlError(f"{what} names {name}, which is not set in this process's "
                            f"environment (pid {os.getpid()})")
    return value


def resolve_redis_url(url: str | None, env_name: str | None,
                      environ: Mapping[str, str] | None = None) -> str | None:
    """``url``, or the value of the environment variable ``env_name`` when that is set.
    A named variable that is unset or empty is an error, not a silent fall back to
    memory: a deployment that asked for Redis must not run without it unnoticed."""
    if env_name is None:
        return url
    return check_redis_url(_from_env(env_name, "redis_url_env", environ).strip(),
                           source=f"${env_name}")


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (any characters: it is percent-encoded, and redis-py
    decodes it) as its password; a URL that already has one is refused."""
    parsed = urlparse(url)
    if parsed.password is not None or "password=" in parsed.query:
        raise RedisUrlError(f"{redacted(url)!r} already has a password; with "
                            "redis_password_env the URL must carry none")
    secret = quote(password, safe="")
    if parsed.scheme == "unix":  # redis-py reads a socket URL's password from the query
        return f"{url}{'&' if parsed.query else '?'}password={secret}"
    user = quote(parsed.username or "", safe="")
    host = parsed.netloc.rsplit("@", 1)[-1]
    return urlunparse(parsed._replace(netloc=f"{user}:{secret}@{host}"))


def redacted(url: str | None) -> str:
    """The URL without its password (in the userinfo, or a socket URL's query), for logs."""
    if not url:
        return ""
    parsed = urlparse(url)
    if parsed.password is not None:
        userinfo, _, host = parsed.netloc.rpartition("@")
        url = urlunparse(parsed._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))
    return re.sub(r"([?&])password=[^&]*", r"\1password=***", url)


class RedisUrlSource(BaseModel):
    """Checks and resolution shared by configs that name a Redis by ``redis_url`` (each
    config declares it with its own description) or by ``redis_url_env``, with the
    password optionally in a variable of its own."""

    redis_url: str | None
    redis_url_env: str | None = Field(
        None, pattern=ENV_NAME_PATTERN, description="Name of an environment variable that "
        "holds the Redis URL, read when the process that uses Redis (queue manager, "
        "predictor) starts: for a URL with a password from a secret (the Helm chart sets "
        "AUGSERVE_REDIS_URL). Unset there: that process does not start. Exclusive with "
        "redis_url.")
    redis_password_env: str | None = Field(
        None, pattern=ENV_NAME_PATTERN, description="Name of an environment variable that "
        "holds the Redis password, added to the URL (which then carries none) "
        "percent-encoded, so any characters work (the Helm chart sets "
        "AUGSERVE_REDIS_PASSWORD from its secret).")

    @field_validator("redis_url", check_fields=False)
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        return None if url is None else check_redis_url(url)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.redis_url is not None and self.redis_url_env is not None:
            raise ValueError("set redis_url or redis_url_env, not both")
        if self.redis_password_env and not (self.redis_url or self.redis_url_env):
            raise ValueError("redis_password_env needs redis_url or redis_url_env")
        return self

    def resolved(self, environ: Mapping[str, str] | None = None) -> Self:
        """This config with ``redis_url`` read from ``redis_url_env`` and the password
        from ``redis_password_env`` when those are set (:class:`RedisUrlError` when a
        variable is unset)."""
        if self.redis_url_env is None and self.redis_password_env is None:
            return self
        url = resolve_redis_url(self.redis_url, self.redis_url_env, environ)
        if self.redis_password_env:
            if url is None:
                raise RedisUrlError("redis_password_env is set but no redis_url (nor "
                                    "redis_url_env) names the server")
            url = with_password(url, _from_env(self.redis_password_env, "redis_password_env",
                                               environ))
        return self.model_copy(update={"redis_url": url, "redis_url_env": None,
                                       "redis_password_env": None})
