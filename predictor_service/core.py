"""The predictor without gRPC: validation, batched prediction off the event loop, learning
from observations, persistence.  The clock is passed in; the gRPC servicer and unit tests
drive the same object."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from augserve_common.redis_url import redacted
from predictor_service.config import PredictorConfig
from predictor_service.distributions import lognormal
from predictor_service.durations import DurationModel
from predictor_service.embedding import EMBEDDING_MODEL, Embedder
from predictor_service.features import prompt_text
from predictor_service.learner import (
    Learner,
    Sample,
    is_ready,
    make_batch,
    parse_history,
)
from predictor_service.length_models import resolve_length_model
from predictor_service.metrics import PredictorMetrics
from predictor_service.store import MemoryStore, RedisStore, Snapshot, pack_state
from predictor_service.types import (
    ApiDurationPrediction,
    LengthQuery,
    Observation,
    Prediction,
)

logger = logging.getLogger("augserve.predictor")
MAX_NAME_CHARS = 128
#: Most API calls in one observation (the ingress allows 64 augmented turns).
MAX_API_CALLS = 256
#: Queries waiting to be evaluated beyond which Predict answers UNAVAILABLE at once.
MAX_QUEUED_QUERIES_PER_BATCH = 16
#: After a failed refit, the next attempt waits this long.
REFIT_RETRY_S = 30.0


class PredictorInputError(ValueError):
    """Bad input; the gRPC layer answers INVALID_ARGUMENT with this message."""


class PredictorUnavailableError(RuntimeError):
    """Not started or shutting down; the gRPC layer answers UNAVAILABLE."""


@dataclass
class _Pending:
    query: LengthQuery
    future: asyncio.Future


class PredictorCore:
    def __init__(self, config: PredictorConfig, clock: Callable[[], float] = time.monotonic,
                 embedder_factory: Callable[[], Embedder] | None = None) -> None:
        self.config = config = config.resolved()  # redis_url read from redis_url_env here
        self.clock = clock
        self.model_cls = resolve_length_model(config.length_model)
        # Built once: an unusable classifier checkpoint fails the start, not every Observe.
        self.base_model = self.model_cls(config)
        self.prior = lognormal(config.prior_output_tokens_p50, config.prior_output_tokens_p90)
        self.learners: dict[str, Learner] = {}
        self.durations = self._new_durations()
        self.durations_dirty = False
        self.store = RedisStore(config.redis_url, config.key_prefix) if config.redis_url else MemoryStore()
        self.metrics = PredictorMetrics()
        self.embedder: Embedder | None = None
        self._embedder_factory = embedder_factory
        self._queue: list[_Pending] = []
        self._inflight: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._next_redis_try_s = 0.0
        self._restored = False
        self.stopped = False

    def _new_durations(self) -> DurationModel:
        c = self.config
        return DurationModel(c.duration_prior_mean_s, c.duration_prior_p90_s,
                             c.duration_prior_weight, c.max_api_names_tracked)

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self.model_cls.uses_embeddings:
            await asyncio.to_thread(self.load_embedder)
        if self.store.kind == "memory":
            logger.warning("predictor: no Redis URL; learned state stays in memory and is "
                           "lost when the server stops")
        else:
            await self._try_redis()
        self._tasks = [asyncio.create_task(self._batch_loop()),
                       asyncio.create_task(self._maintain_loop())]

    def load_embedder(self) -> None:
        """Load the embedding model the length model needs (in the caller's thread)."""
        if self.model_cls.uses_embeddings and self.embedder is None:
            self.embedder = (self._embedder_factory or self._default_embedder)()

    def _default_embedder(self) -> Embedder:
        return Embedder(self.config.embed_max_tokens, self.config.embed_cache_size)

    async def stop(self) -> None:
        self.stopped = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for p in self._queue + self._inflight:
            if not p.future.done():
                p.future.set_exception(PredictorUnavailableError("the predictor is shutting down"))
        self._queue.clear()
        self._inflight = []
        if self.store.connected:
            await self._persist()
        await self.store.close()

    # ---- validation ---------------------------------------------------------------------
    def _learner(self, model: str, create: bool) -> Learner | None:
        learner = self.learners.get(model)
        if learner is not None:
            return learner
        if not model or len(model) > MAX_NAME_CHARS:
            raise PredictorInputError(f"model: a model name of 1 to {MAX_NAME_CHARS} characters "
                                      "is required")
        if self.config.models and model not in self.config.models:
            raise PredictorInputError(f"model: unknown model {model!r}; known: {self.config.models}")
        if not create:
            return None
        if len(self.learners) >= self.config.max_models:
            raise PredictorInputError(
                f"model: {model!r} would be model number {len(self.learners) + 1}; at most "
                f"{self.config.max_models} (max_models) are learned")
        learner = self.learners[model] = Learner(model, self.base_model, self.config)
        return learner

    def _check_prompt(self, text: str, ids: tuple[int, ...], prompt_tokens: int) -> int:
        if not text and not ids:
            raise PredictorInputError("prompt_text / prompt_token_ids: the prompt is empty")
        if prompt_tokens < 0:
            raise PredictorInputError(f"prompt_tokens: {prompt_tokens} is negative")
        if any(t < 0 for t in ids):
            raise PredictorInputError("prompt_token_ids: negative token ids")
        n = prompt_tokens or len(ids) or max(1, len(text) // 4)
        if n > self.config.max_prompt_tokens:
            raise PredictorInputError(f"prompt_tokens: {n} is over the limit of "
                                      f"{self.config.max_prompt_tokens}")
        return n

    def _check_names(self, names) -> None:
        if len(names) > self.config.max_api_names:
            raise PredictorInputError(f"api_names: {len(names)} names; at most "
                                      f"{self.config.max_api_names}")
        for n in names:
            if not n or len(n) > MAX_NAME_CHARS:
                raise PredictorInputError(f"api_names: names must have 1 to {MAX_NAME_CHARS} characters")

    def validate(self, q: LengthQuery) -> LengthQuery:
        self._learner(q.model, create=False)
        n = self._check_prompt(q.prompt_text, q.prompt_token_ids, q.prompt_tokens)
        self._check_names(q.api_names)
        if q.max_tokens < 0:
            raise PredictorInputError(f"max_tokens: {q.max_tokens} is negative")
        return LengthQuery(q.model, prompt_text(q.prompt_text, q.prompt_token_ids,
                                                self.config.max_prompt_chars),
                           (), n, tuple(q.api_names), q.max_tokens)

    # ---- prediction ---------------------------------------------------------------------
    async def predict(self, queries: list[LengthQuery]) -> list[Prediction]:
        """Validates all first (one bad query fails the call), then waits for the batcher."""
        try:
            checked = [self.validate(q) for q in queries]
        except PredictorInputError:
            self.metrics.request("predict", "invalid")
            raise
        if self.stopped or not self._tasks:
            raise PredictorUnavailableError("the predictor is not running")
        if len(self._queue) > MAX_QUEUED_QUERIES_PER_BATCH * self.config.max_batch:
            self.metrics.request("predict", "overloaded")
            raise PredictorUnavailableError("the predictor is overloaded; use the fallback")
        loop = asyncio.get_running_loop()
        pending = [_Pending(q, loop.create_future()) for q in checked]
        self._queue.extend(pending)
        self._wakeup.set()
        results = await asyncio.gather(*(p.future for p in pending))
        self.metrics.request("predict", "ok", len(results))
        return list(results)

    def predict_now(self, queries: list[LengthQuery]) -> list[Prediction]:
        """:meth:`predict` in the caller's thread, without the batcher (the simulator calls
        it where the ingress and the replicas call the server)."""
        checked = [self.validate(q) for q in queries]
        return [self._assemble(q, *r) for q, r in zip(checked, self._predict_lengths(checked))]

    async def _batch_loop(self) -> None:
        """One batch at a time; queries arriving meanwhile form the next batch."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # Callers that gave up (their deadline passed) need no answer.
                self._queue = [p for p in self._queue if not p.future.done()]
                batch = self._inflight = self._queue[:self.config.max_batch]
                del self._queue[:len(batch)]
                if not batch:
                    break
                started = time.perf_counter()
                try:
                    lengths = await asyncio.to_thread(self._predict_lengths, [p.query for p in batch])
                except Exception as exc:
                    logger.exception("prediction failed")
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                self._inflight = []
                self.metrics.batch_time(time.perf_counter() - started)
                for p, (dist, version, fitted) in zip(batch, lengths):
                    if not p.future.done():
                        p.future.set_result(self._assemble(p.query, dist, version, fitted))

    def _predict_lengths(self, queries: list[LengthQuery]):
        """Worker thread: the length distribution per query, grouped by model."""
        out: list = [None] * len(queries)
        by_model: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_model.setdefault(q.model, []).append(i)
        for model, idx in by_model.items():
            learner = self.learners.get(model)
            fitted = learner.fitted if learner else (
                self.base_model if is_ready(self.base_model) else None)
            if fitted is None:
                for i in idx:
                    out[i] = (self.prior, 0, False)
                continue
            samples = [Sample(queries[i].prompt_text, queries[i].prompt_tokens, 0) for i in idx]
            embed = None
            if fitted.uses_embeddings:
                assert self.embedder is not None, "load_embedder() first"
                embed = self.embedder.embed
            for i, dist in zip(idx, fitted.predict(make_batch(samples, embed))):
                out[i] = (dist, learner.version if learner else 0, True)
        return out

    def _assemble(self, q: LengthQuery, dist, version: int, fitted: bool) -> Prediction:
        d = dist.capped(q.max_tokens)
        return Prediction(
            output_tokens=d.point, output_tokens_p50=d.p50, output_tokens_p90=d.p90,
            bin_probs=tuple(float(p) for p in d.bin_probs),
            api_durations=tuple(self._duration(n) for n in q.api_names),
            predictor_version=version, fallback=not fitted, length_model=self.model_cls.name)

    def _duration(self, name: str) -> ApiDurationPrediction:
        e = self.durations.estimate(name)
        return ApiDurationPrediction(name, e.mean_s, e.p90_s, e.samples)

    # ---- learning -----------------------------------------------------------------------
    def observe(self, observations: list[Observation]) -> tuple[int, list[str]]:
        """Accepts the valid observations; the others are named with the reason."""
        if len(observations) > self.config.max_observations_per_call:
            self.metrics.request("observe", "invalid")
            raise PredictorInputError(f"observations: {len(observations)} in one call; at most "
                                      f"{self.config.max_observations_per_call}")
        accepted, rejected = 0, []
        for i, o in enumerate(observations):
            try:
                self._observe_one(o)
                accepted += 1
            except PredictorInputError as exc:
                rejected.append(f"observations[{i}]: {exc}")
        self.metrics.request("observe", "ok", accepted)
        if rejected:
            self.metrics.request("observe", "invalid", len(rejected))
        return accepted, rejected

    def _observe_one(self, o: Observation) -> None:
        learner = self._learner(o.model, create=False)
        n = self._check_prompt(o.prompt_text, o.prompt_token_ids, o.prompt_tokens)
        if not o.output_tokens_per_turn or any(t < 0 for t in o.output_tokens_per_turn):
            raise PredictorInputError("output_tokens_per_turn: one count or more per "
                                      "observation, none negative")
        if len(o.api_calls) > MAX_API_CALLS:
            raise PredictorInputError(f"api_calls: {len(o.api_calls)} calls; at most {MAX_API_CALLS}")
        self._check_names(list(dict.fromkeys(name for name, _ in o.api_calls)))
        for name, d in o.api_calls:
            if not (math.isfinite(d) and d >= 0):
                raise PredictorInputError(f"api_calls: duration of {name!r} must be a finite "
                                          "number of seconds ≥ 0")
        learner = learner or self._learner(o.model, create=True)
        assert learner is not None  # create=True: a learner, or PredictorInputError
        # The prompt is what preceded the first turn: it trains the first turn's length.
        learner.add([Sample(prompt_text(o.prompt_text, o.prompt_token_ids,
                                        self.config.max_prompt_chars),
                            n, o.output_tokens_per_turn[0])])
        for name, d in o.api_calls:
            self.durations.observe(name, d)
            self.durations_dirty = True

    async def refit_due(self) -> int:
        """Refit every learner that is due (in a worker thread); returns how many."""
        done = 0
        for learner in list(self.learners.values()):
            if learner.fitting or not learner.due(self.clock()):
                continue
            learner.fitting = True
            pending = learner.pending
            embed = self.embedder.embed if self.embedder is not None else None
            try:
                fitted, errors = await asyncio.to_thread(learner.fit_job(embed))
            except Exception:
                logger.exception("refit of model %r failed; next try in %.0f s", learner.model,
                                 REFIT_RETRY_S)
                learner.not_before_s = self.clock() + REFIT_RETRY_S
                continue
            finally:
                learner.fitting = False
            self._install(learner, fitted, errors, pending)
            done += 1
        return done

    def refit_now(self) -> int:
        """:meth:`refit_due` in the caller's thread (the simulator's clock decides what is
        due); returns how many learners were refitted."""
        done = 0
        for learner in list(self.learners.values()):
            if learner.fitting or not learner.due(self.clock()):
                continue
            pending = learner.pending
            embed = self.embedder.embed if self.embedder is not None else None
            fitted, errors = learner.fit_job(embed)()
            self._install(learner, fitted, errors, pending)
            done += 1
        return done

    def _install(self, learner: Learner, fitted, errors, pending: int) -> None:
        learner.install(fitted, self.clock(), pending)
        self.metrics.counters.refits += 1
        self.metrics.version(learner.model, learner.version)
        self.metrics.abs_errors(learner.model, errors)

    async def _maintain_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                await self.refit_due()
                if self.store.kind == "redis" and not self.store.connected:
                    if self.clock() >= self._next_redis_try_s:
                        await self._try_redis()
                elif self.store.connected:
                    await self._persist()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("predictor maintenance failed")

    # ---- persistence --------------------------------------------------------------------
    async def _try_redis(self) -> None:
        self._next_redis_try_s = self.clock() + self.config.redis_retry_s
        if not await self.store.connect():
            logger.warning("predictor: serving from memory; retrying redis every %.0f s",
                           self.config.redis_retry_s)
            self.metrics.redis_connected(False)
            return
        if not self._restored:  # once: later reconnections only flush the outbox
            try:
                await self._restore(await self.store.load())
            except Exception as exc:  # noqa: BLE001
                logger.warning("predictor: could not load state from redis: %s", exc)
                await self.store.close()
                self.metrics.redis_connected(False)
                return
            self._restored = True
        logger.info("predictor: state in redis at %s (prefix %s)", redacted(self.config.redis_url),
                    self.config.key_prefix)
        self.metrics.redis_connected(True)

    async def _restore(self, snap: Snapshot) -> None:
        """Merge the persisted state with what this process learned meanwhile.  Never
        raises: what cannot be used is skipped, counted and logged."""
        self.metrics.counters.corrupt_snapshots += snap.corrupt
        if snap.durations:
            self._restore_durations(snap.durations)
        for name, ms in snap.models.items():
            if self.config.models and name not in self.config.models:
                continue
            try:
                learner = self._learner(name, create=True)
                assert learner is not None  # create=True: a learner, or PredictorInputError
                old, bad = await asyncio.to_thread(
                    parse_history, ms.history, self.embedder.dim if self.embedder else None)
                self.metrics.counters.corrupt_snapshots += bad
                if bad:
                    logger.warning("ignored %d corrupt history entries of %r", bad, name)
                # Persisted first, then what this process learned meanwhile (kept if it overflows).
                room = (learner.history.maxlen or 0) - len(learner.history)
                learner.history.extendleft(reversed(old[max(0, len(old) - room):] if room > 0 else []))
                learner.observations_total += len(old)
                learner.version = max(learner.version, ms.version)
                # Not fitted here yet (a pretrained classifier counts as not fitted: the
                # persisted model is that checkpoint refined by observations).
                unfitted = learner.fitted is None or learner.fitted is self.base_model
                if ms.state is not None and ms.length_model == self.model_cls.name and unfitted:
                    try:
                        learner.fitted = self.model_cls.from_state(self.config, ms.state)
                    except (KeyError, ValueError) as exc:
                        self.metrics.counters.corrupt_snapshots += 1
                        logger.warning("ignoring the unusable fitted state of %r: %s", name, exc)
                restored_model = ms.state is not None and learner.fitted is not self.base_model
                if not restored_model and len(learner.history) >= self.config.min_history:
                    learner.pending = max(learner.pending, 1)  # fit what was restored
            except PredictorInputError as exc:
                logger.warning("not restoring model %r: %s", name, exc)
            except Exception:
                self.metrics.counters.corrupt_snapshots += 1
                logger.exception("restoring model %r failed; skipped", name)

    def _restore_durations(self, raw: bytes) -> None:
        """Per API name, the persisted statistics unless this process has more samples."""
        c = self.config
        try:  # read whatever was saved, even under a since-lowered name limit
            persisted = DurationModel.from_dict(json.loads(raw), c.duration_prior_mean_s,
                                                c.duration_prior_p90_s, c.duration_prior_weight,
                                                1 << 30)
        except ValueError as exc:
            self.metrics.counters.corrupt_snapshots += 1
            logger.warning("ignoring corrupt duration statistics in redis: %s", exc)
            return
        self.durations = self.durations.merged(persisted)
        self.durations_dirty = True

    async def _persist(self) -> None:
        try:
            for learner in list(self.learners.values()):  # Observe may add models meanwhile
                if not learner.unsaved and not learner.state_dirty:
                    continue
                # Take the outbox; observations arriving during the write start a new one.
                new, learner.unsaved = list(learner.unsaved), deque(maxlen=learner.unsaved.maxlen)
                fitted = learner.fitted if learner.state_dirty else None
                version = learner.version  # with `fitted`: a refit may land during the write
                learner.state_dirty = False
                try:
                    samples, blob = await asyncio.to_thread(_encode, new, fitted)
                    await self.store.save_model(learner.model, samples, self.config.history_size,
                                                version, self.model_cls.name, blob)
                except BaseException:
                    learner.unsaved = deque(new + list(learner.unsaved), maxlen=learner.unsaved.maxlen)
                    learner.state_dirty = learner.state_dirty or fitted is not None
                    raise
            if self.durations_dirty:
                self.durations_dirty = False
                await self.store.save_durations(json.dumps(self.durations.to_dict()))
        except Exception as exc:  # noqa: BLE001 - redis went away: keep the outbox, retry
            self.durations_dirty = True
            self.metrics.counters.redis_errors += 1
            logger.warning("predictor: redis write failed (%s); serving from memory", exc)
            await self.store.close()
            self.metrics.redis_connected(False)
            self._next_redis_try_s = self.clock() + self.config.redis_retry_s

    # ---- introspection ------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "length_model": self.model_cls.name,
            "models": [{"model": m, "version": lr.version, "history_size": len(lr.history),
                        "observations_total": lr.observations_total}
                       for m, lr in self.learners.items()],
            "api_durations": [self._duration(n) for n in self.durations.names()],
            "persistence": self.store.kind, "redis_connected": self.store.connected,
            "embedding_model": EMBEDDING_MODEL if self.embedder else "",
            "counters": self.metrics.counters,
        }


def _encode(samples: list[Sample], fitted) -> tuple[list[str], bytes | None]:
    """Worker thread: the JSON of new samples and the fitted model's ``.npz`` bytes."""
    return [s.to_json() for s in samples], (pack_state(fitted.state()) if fitted else None)
