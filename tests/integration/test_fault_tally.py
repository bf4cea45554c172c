"""The fault scenarios' tally counts the alerts that stand: one retracted after a late fix is not "raised".

A fix arriving late inside the reorder window retracts what the replay in order no longer raises
(tracker/core/reorder.py); the scenarios expect what the content raises in order, so a retracted alert
counted as raised failed "every alert raised once" on any reorder within the window.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from tests.conftest import StackInfo
from tests.faults.scenarios import standing_alerts
from tests.integration.conftest import new_device_id
from tests.integration.receivers import stored_alert
from tracker.adapters.store import Batch, Store
from tracker.core.model import AlertUpdate


async def test_a_retracted_alert_is_not_counted_as_raised(stack: StackInfo) -> None:
    prefix = new_device_id("TALLY")
    kept = stored_alert(f"{prefix}-1", "stands", "tally-kept")
    withdrawn = stored_alert(f"{prefix}-2", "retracted by a late fix", "tally-withdrawn")
    store = await Store.connect(stack.dsn, max_size=1)
    try:
        await store.write_batch(Batch(alerts=[kept, withdrawn]))
        late = withdrawn.ts + timedelta(seconds=5)
        reason = {"retracted": True, "reason": "a fix that arrived late changed the verdict"}
        update = AlertUpdate(withdrawn, late, reason, closes=True)
        closed = AlertUpdate(kept, late, {"ended_at": late.isoformat()}, closes=True)  # an update, not a retraction
        await store.write_batch(Batch(updates=[update, closed]))
        ours = {kept.id, withdrawn.id}
        await store.mark_delivered([r["id"] for r in await store.pending_outbox(10_000) if r["alert_id"] in ours])
    finally:
        await store.close()
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        standing, retracted = await standing_alerts(pool, f"{prefix}-%")
    finally:
        await pool.close()
    assert [r["id"] for r in standing] == [str(kept.id)]
    assert retracted == 1
