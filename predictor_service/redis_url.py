"""Redis URLs of the queue store and the predictor: the scheme check, a URL read from an
environment variable (one that carries a password from a Kubernetes secret must not sit
in a Serve config, which anyone who can read the RayService sees), and a redacted form
for logs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self
from urllib.parse import urlparse

from pydantic import BaseModel, field_validator, model_validator

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


def resolve_redis_url(url: str | None, env_name: str | None,
                      environ: Mapping[str, str] | None = None) -> str | None:
    """``url``, or the value of the environment variable ``env_name`` when that is set.
    A named variable that is unset or empty is an error, not a silent fall back to
    memory: a deployment that asked for Redis must not run without it unnoticed."""
    if env_name is None:
        return url
    environ = os.environ if environ is None else environ
    value = environ.get(env_name, "").strip()
    if not value:
        raise RedisUrlError(f"redis_url_env names {env_name}, which is not set in this "
                            f"process's environment (pid {os.getpid()})")
    return check_redis_url(value, source=f"${env_name}")


def exclusive(url: str | None, env_name: str | None) -> None:
    if url is not None and env_name is not None:
        raise ValueError("set redis_url or redis_url_env, not both")


def redacted(url: str | None) -> str:
    """The URL without its password, for logs and errors."""
    parsed = urlparse(url or "")
    if parsed.password is None:
        return url or ""
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@")).geturl()


class RedisUrlSource(BaseModel):
    """Checks and resolution shared by configs that name a Redis by ``redis_url`` or by
    ``redis_url_env`` (each config declares the two fields with its own description)."""

    redis_url: str | None
    redis_url_env: str | None

    @field_validator("redis_url", check_fields=False)
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        return None if url is None else check_redis_url(url)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        exclusive(self.redis_url, self.redis_url_env)
        return self

    def resolved(self, environ: Mapping[str, str] | None = None) -> Self:
        """This config with ``redis_url`` read from ``redis_url_env`` when that is set
        (:class:`RedisUrlError` when the variable is unset)."""
        if self.redis_url_env is None:
            return self
        url = resolve_redis_url(None, self.redis_url_env, environ)
        return self.model_copy(update={"redis_url": url, "redis_url_env": None})
