"""Block-granular KV cache with a prefix cache, after vLLM 0.32's ``BlockPool`` and
``KVCacheManager`` (``vllm/v1/core/block_pool.py``, ``kv_cache_manager.py``,
``single_type_kv_cache_manager.py``), full attention only.

- Block 0 is vLLM's null block: ``num_blocks - 1`` are usable.
- Free blocks sit in one LRU queue; a freed request's blocks are released in reverse
  order (its tail first): a block with a cached hash joins the queue's tail, one without
  its front (``BlockPool.free_blocks``: it is reused first).  Taking a free block that
  holds a cached prefix evicts that block's entry.
- A full block is cached under the chained hash of its tokens once computed
  (``cache_blocks``: up to ``min(computed + new, num_tokens)``); several blocks may hold
  the same hash (computed by two requests at once), a lookup takes the first cached.
- A prefix-cache hit (``computed_blocks``) is the longest run of cached full blocks of
  the request's tokens, at most ``num_tokens − 1`` tokens (the last token is always
  computed, for its logits).
- ``allocate_slots``: the blocks the tokens need beyond those held and hit, plus the hit
  blocks that sit in the free queue (touching them takes them out), plus the watermark
  for a waiting request when something is already scheduled; with
  ``full_sequence_must_fit`` (vLLM's ``scheduler_reserve_full_isl``) the whole sequence
  must fit first.  ``None`` when it does not fit: nothing changes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(slots=True, eq=False)
class KvSeq:
    """What the KV manager needs of a sequence (the engine model's request)."""

    request_id: str
    token_ids: list[int]
    num_computed_tokens: int = 0
    #: Hashes of its full blocks, extended as tokens arrive.
    block_hashes: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def refresh_hashes(self, block_size: int) -> None:
        n_full = len(self.token_ids) // block_size
        while len(self.block_hashes) < n_full:
            i = len(self.block_hashes)
            parent = self.block_hashes[-1] if self.block_hashes else 0
            self.block_hashes.append(hash((parent, tuple(self.token_ids[i * block_size:
                                                                       (i + 1) * block_size]))))


class KvCache:
    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True,
                 watermark: float = 0.0) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be at least 2 (one is the null block), got {num_blocks}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark_blocks = int(watermark * num_blocks)
        self._ref = [0] * num_blocks
        self._hash_of: dict[int, int] = {}
        self._cached: dict[int, dict[int, None]] = {}  # hash -> blocks, first cached first
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(1, num_blocks))
        self._blocks: dict[str, list[int]] = {}
        self._num_cached: dict[str, int] = {}  # request -> blocks registered in the cache
        self.num_evicted_blocks = 0

    # ---- counts ------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Used fraction of the usable blocks (vLLM's ``kv_cache_usage``)."""
        return 1.0 - len(self._free) / (self.num_blocks - 1)

    def blocks_of(self, request_id: str) -> list[int]:
        return self._blocks.get(request_id, [])

    # ---- prefix cache ------------------------------------------------------------------
    def computed_blocks(self, seq: KvSeq) -> tuple[list[int], int]:
        """(hit blocks, hit tokens) of a request that holds no blocks."""
        if not self.enable_prefix_caching:
            return [], 0
        seq.refresh_hashes(self.block_size)
        max_blocks = (seq.num_tokens - 1) // self.block_size
        hit: list[int] = []
        for h in seq.block_hashes[:max_blocks]:
            blocks = self._cached.get(h)
            if not blocks:
                break
            hit.append(next(iter(blocks)))
        return hit, len(hit) * self.block_size

    # ---- allocation --------------------------------------------------------------------
    def _needed(self, seq: KvSeq, num_tokens: int, hit: Sequence[int]) -> int:
        held = len(self._blocks.get(seq.request_id, ()))
        evictable = sum(1 for b in hit if self._ref[b] == 0)
        return max(cdiv(num_tokens, self.block_size) - held - len(hit), 0) + evictable

    def allocate_slots(self, seq: KvSeq, num_new_tokens: int, hit: Sequence[int] = (),
                       num_hit_tokens: int = 0, *, waiting: bool = False,
                       has_scheduled: bool = True, full_sequence_must_fit: bool = False,
                       ) -> bool:
        watermark = self.watermark_blocks if (waiting and has_scheduled) else 0
        computed = seq.num_computed_tokens + num_hit_tokens
        total = computed + num_new_tokens
        if full_sequence_must_fit and (self._needed(seq, seq.num_tokens, hit) + watermark
                                       > len(self._free)):
            return False
        blocks = self._blocks.get(seq.request_id)
        if blocks is None:
            blocks = self._blocks[seq.request_id] = []
        if hit:
            if self._needed(seq, total, hit) + watermark > len(self._free):
                return False
            for b in hit:  # touch: out of the free queue, one more reference
                if self._ref[b] == 0:
                    del self._free[b]
                self._ref[b] += 1
                blocks.append(b)
        new = max(-(-total // self.block_size) - len(blocks), 0)
        if new + watermark > len(self._free):  # vLLM checks the watermark even for 0 new
            return False
        for _ in range(new):
            blocks.append(self._take_free())
        if self.enable_prefix_caching:
            full = min(total, len(seq.token_ids)) // self.block_size
            if full > self._num_cached.get(seq.request_id, 0):
                self._cache_full_blocks(seq, full * self.block_size)
        return True

    def allocate_running(self, seq: KvSeq, num_new_tokens: int) -> bool:
        """``allocate_slots`` for a running request (no hit, no watermark), with the
        common case first: its blocks already hold the tokens and no block fills."""
        held = self._blocks.get(seq.request_id)
        if held is not None:
            total = seq.num_computed_tokens + num_new_tokens
            if total <= len(held) * self.block_size and (
                    not self.enable_prefix_caching
                    or min(total, len(seq.token_ids)) // self.block_size
                    <= self._num_cached.get(seq.request_id, 0)):
                return True
        return self.allocate_slots(seq, num_new_tokens)

    def _take_free(self) -> int:
        b, _ = self._free.popitem(last=False)
        h = self._hash_of.pop(b, None)
        if h is not None:
            holders = self._cached[h]
            del holders[b]
            if not holders:
                del self._cached[h]
            self.num_evicted_blocks += 1
        self._ref[b] = 1
        return b

    def _cache_full_blocks(self, seq: KvSeq, num_tokens: int) -> None:
        seq.refresh_hashes(self.block_size)
        blocks = self._blocks[seq.request_id]
        done = self._num_cached.get(seq.request_id, 0)
        full = min(num_tokens // self.block_size, len(seq.block_hashes), len(blocks))
        for i in range(done, full):
            b, h = blocks[i], seq.block_hashes[i]
            if b not in self._hash_of:
                self._hash_of[b] = h
                self._cached.setdefault(h, {})[b] = None
        self._num_cached[seq.request_id] = max(done, full)

    def free(self, request_id: str) -> int:
        """Release a request's blocks (tail first into the LRU queue); returns how many."""
        blocks = self._blocks.pop(request_id, [])
        self._num_cached.pop(request_id, None)
        front = []
        for b in reversed(blocks):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                if b in self._hash_of:
                    self._free[b] = None
                else:
                    front.append(b)
        for b in reversed(front):  # the first of them ends at the very front
            self._free[b] = None
            self._free.move_to_end(b, last=False)
        return len(blocks)

    def check(self) -> None:
        """Invariants (tests): every usable block is free xor referenced."""
        referenced = {b for bl in self._blocks.values() for b in bl}
        assert referenced.isdisjoint(self._free), "a held block is in the free queue"
        assert len(referenced) + len(self._free) == self.num_blocks - 1, "a block leaked"
