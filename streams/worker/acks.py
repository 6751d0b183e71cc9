"""At-least-once with several batches in flight: commit a partition only below its lowest unfinished offset.

faust acks each event when the agent is done with it and a background loop commits, per partition, the
end of the first run of consecutive acked offsets (`Consumer._new_offset`). With two batches in flight
(ARTROUTE_AGENT_CONCURRENCY=2: one decoding while the other is on Triton), a slow batch can still be
working while later batches of the same partition are acked. faust 0.15.3 then commits past the slow one
when the committed offset is 0/None (a new group) or when exactly one offset is missing at the head
(`min(acked) - committed > 1` lets a gap of one through: faust-streaming issue #606, fix proposed in PR
#707). A worker killed at that moment never gets the slow batch's events again: they are lost.

`install()` replaces that method with one that computes the same run of acked offsets and then clamps it
below the lowest offset of the partition that was delivered to an agent and is not acked yet (faust
tracks these in `Consumer._unacked_messages`). So an offset is committed only when every message before
it is finished, whatever the interleaving of batches, and the throughput overlap of two batches in
flight is kept. Pinned to the faust version it was written against: another version refuses to start
until the patch is checked again (tests/test_worker_acks.py reproduces the loss on the real stack).
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any

PATCHED_FAUST_VERSION = "0.15.3"
_ORIGINAL = "_artroute_original_new_offset"


def committable_run(acked: list[int], lowest_unacked: int | None) -> list[int]:
    """The first run of consecutive offsets in sorted `acked`, cut below `lowest_unacked`: the offsets a
    commit may cover (the commit is then the last of them + 1). Empty: nothing may be committed."""
    run: list[int] = []
    for offset in acked:
        if run and offset == run[-1]:
            continue  # a duplicate (a log gap filled in as well as acked)
        if run and offset != run[-1] + 1 or lowest_unacked is not None and offset >= lowest_unacked:
            break
        run.append(offset)
    return run


def lowest_unacked(consumer: Any, tp: Any) -> int | None:
    """The lowest offset of `tp` that an agent is still working on (delivered, not acked)."""
    offsets = [m.offset for m in list(consumer._unacked_messages) if m.tp == tp and not m.acked]
    return min(offsets, default=None)


def _new_offset(self, tp):  # noqa: ANN001 - faust's Consumer method signature
    acked = self._acked[tp]
    if not acked:
        return None
    # As faust 0.15.3: offsets the log skipped (gaps between fetched messages) count as acked.
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            filler: list[int] = []
            for entry in candidates:
                filler.extend(range(entry.begin, entry.end))
            acked.extend(filler)
            gap_for_tp.chop(0, max(filler[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed and acked[0] - committed > 1:  # faust's own head check, kept
        return None
    run = committable_run(acked, lowest_unacked(self, tp))
    if not run:
        return None
    consumed = len(run)
    while consumed < len(acked) and acked[consumed] <= run[-1]:  # duplicates of the run's offsets
        consumed += 1
    del acked[:consumed]
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def install() -> None:
    """Patch faust's Consumer once (idempotent); refuses a faust version the patch was not checked against."""
    from faust.transport.consumer import Consumer

    installed = version("faust-streaming")
    if installed != PATCHED_FAUST_VERSION:
        raise RuntimeError(f"streams.worker.acks patches faust-streaming {PATCHED_FAUST_VERSION}'s "
                           f"Consumer._new_offset, but {installed} is installed: check whether it still commits "
                           "past in-flight offsets (faust-streaming #606) and update the patch")
    if not hasattr(Consumer, _ORIGINAL):
        setattr(Consumer, _ORIGINAL, Consumer._new_offset)
        Consumer._new_offset = _new_offset

