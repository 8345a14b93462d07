"""Where the predictor's learned state lives: in memory only, or in Redis.

Redis keys (``P`` = ``key_prefix``, ``M`` = a served model's name):
- ``P:models`` — set of model names with state;
- ``P:history:M`` — list of JSON samples (prompt text cut as configured, prompt and output
  tokens, the embedding as float16 when the model uses one), trimmed to ``history_size``;
- ``P:state:M`` — hash: ``version``, ``length_model``, ``blob`` (the fitted model's arrays
  as ``.npz``);
- ``P:durations`` — JSON of the per-API duration statistics.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger("augserve.predictor")


@dataclass
class ModelSnapshot:
    history: list[bytes] = field(default_factory=list)
    version: int = 0
    length_model: str = ""
    state: dict[str, np.ndarray] | None = None


@dataclass
class Snapshot:
    models: dict[str, ModelSnapshot] = field(default_factory=dict)
    durations: bytes | None = None
    #: Persisted entries found unusable while loading (already skipped).
    corrupt: int = 0


def pack_state(state: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **state)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return buf.getvalue()


def unpack_state(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class MemoryStore:
    """No persistence: state lives as long as the process."""

    kind = "memory"
    connected = False

    async def connect(self) -> bool:
        return False

    async def load(self) -> Snapshot:
        return Snapshot()

    async def save_model(self, model: str, new_samples: list[str], history_size: int,
                         version: int, length_model: str, state_blob: bytes | None) -> None:
        return None

    async def save_durations(self, payload: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.connected = False
        self._redis: Any = None  # redis.asyncio's client (untyped)

    async def connect(self) -> bool:
        import redis.asyncio as aioredis

        await self.close()
        self._redis = aioredis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            await self._redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not connected"
            logger.warning("redis at %s is unreachable (%s)", self.url, exc)
            await self.close()
            return False
        self.connected = True
        return True

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def load(self) -> Snapshot:
        r = self._redis
        snap = Snapshot(durations=await r.get(self._key("durations")))
        for raw in await r.smembers(self._key("models")):
            name = raw.decode()
            state = await r.hgetall(self._key("state", name))
            ms = ModelSnapshot(history=await r.lrange(self._key("history", name), 0, -1))
            if state:
                try:  # the version survives a corrupt blob: numbers are never reused
                    ms.version = int(state.get(b"version", 0))
                except ValueError:
                    snap.corrupt += 1
                try:
                    ms.length_model = state[b"length_model"].decode()
                    ms.state = unpack_state(state[b"blob"])
                except Exception as exc:  # noqa: BLE001 - a corrupt snapshot is ignored
                    logger.warning("ignoring the corrupt fitted state of model %r in redis: %s",
                                   name, exc)
                    snap.corrupt += 1
                    ms.state = None
            snap.models[name] = ms
        return snap

    async def save_model(self, model: str, new_samples: list[str], history_size: int,
                         version: int, length_model: str, state_blob: bytes | None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self._key("models"), model)
            if new_samples:
                pipe.rpush(self._key("history", model), *new_samples)
                pipe.ltrim(self._key("history", model), -history_size, -1)
            if state_blob is not None:
                pipe.hset(self._key("state", model), mapping={
                    "version": version, "length_model": length_model, "blob": state_blob})
            await pipe.execute()

    async def save_durations(self, payload: str) -> None:
        await self._redis.set(self._key("durations"), payload)

    async def close(self) -> None:
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:  # noqa: BLE001
                pass
        self._redis = None
        self.connected = False
