"""The API's commands on the single writer: submitting them, pairing, registering devices.

A part of ``Service`` (tracker/service.py): API writes never touch the service's state directly; they
are queued as typed commands (tracker/commands.py) for the ingest task, which runs them between
batches, so a device's state only ever changes in one task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from tracker.adapters.errors import (
    CommandRejectedError,
    StoreUnavailableError,
    describe_error,
    message_specific,
)
from tracker.adapters.scope import DEFAULT_ORG
from tracker.adapters.store import Batch, BatchResult
from tracker.commands import ChangeFences, Command, DeactivateDevice, Pair, RegisterDevice
from tracker.core.model import DeviceKind
from tracker.core.reorder import Reorderer
from tracker.core.state import DeviceState
from tracker.service_base import Decoded, ServiceBase, _Queued

log = logging.getLogger(__name__)


class Commands(ServiceBase):
    """Submitting API commands, running them on the single writer, and the ones that change devices (a part
    of ``Service``)."""

    async def commit(  # the batch write of tracker/service.py
        self,
        decoded: Sequence[Decoded],
        *,
        tick_at: datetime | None = None,
        deadline: float | None = None,
        refuse: bool = False,
    ) -> BatchResult:
        raise NotImplementedError

    async def _change_fences(self, command: ChangeFences, deadline: float) -> None:  # tracker/service_fences.py
        raise NotImplementedError

    async def _run_command(self, queued: _Queued) -> None:
        fut = queued.done
        if fut.done():  # the caller gave up (timed out): a fact it was told is not stored must not appear later
            return
        command = queued.command
        try:
            if asyncio.get_running_loop().time() > queued.deadline:
                raise StoreUnavailableError("the single writer was busy past the deadline")
            if isinstance(command, Pair):
                await self._pair(command)
            elif isinstance(command, RegisterDevice):
                await self._register(command, queued.deadline)
            elif isinstance(command, ChangeFences):
                await self._change_fences(command, queued.deadline)
            elif isinstance(command, DeactivateDevice):
                await self._deactivate(command, queued.deadline)
            else:
                fact: Decoded = (command.item, command.source, command.payload)
                await self.commit([fact], deadline=queued.deadline, refuse=not queued.dead_letter)
        except Exception as exc:
            if not isinstance(exc, StoreUnavailableError | CommandRejectedError):
                wrapped: Exception = (
                    CommandRejectedError(describe_error(exc))
                    if message_specific(exc)
                    else StoreUnavailableError(describe_error(exc))
                )
                wrapped.__cause__ = exc
                exc = wrapped
            if not fut.done():
                fut.set_exception(exc)
            else:
                log.warning("API command failed after its caller left: %s", describe_error(exc))
            return
        if not fut.done():
            fut.set_result(None)

    async def _deactivate(self, command: DeactivateDevice, deadline: float) -> None:
        """Refuse the device's fixes from now on (dead letters ``deactivated_device``); its data stays."""
        assert self.orgs is not None
        async with asyncio.timeout_at(deadline):
            await self.orgs.deactivate_device(command.device_id)
        self.devices.pop(command.device_id, None)
        self.deactivated.add(command.device_id)
        self.timers.schedule(command.device_id, None)

    async def _pair(self, command: Pair) -> None:
        assert self.store is not None
        container_id = command.container_id
        state = self.states.get(container_id) or DeviceState(container_id, DeviceKind.CONTAINER)
        # through the container's reorder window, so that a late fix replaying it cannot drop the declaration
        result = Reorderer(self.pipeline, self.settings.reorder_window_s).declare(state, command.truck_id, command.at)
        batch = Batch(states={container_id: result.state})
        await self.store.record_pairing(container_id, command.truck_id, command.at, "api")
        await self.store.write_batch(batch)
        self.states[container_id] = result.state
        self._reschedule(container_id)

    async def _register(self, command: RegisterDevice, deadline: float) -> None:
        """Store the device, then let ingest and customs routing know it; a hung database ends at the deadline."""
        assert self.store is not None
        async with asyncio.timeout_at(deadline):
            await self.store.register_device(
                command.device_id, command.kind, name=command.name, container_no=command.container_no, org=command.org
            )
        self.devices[command.device_id] = command.kind
        self.deactivated.discard(command.device_id)
        if command.org is not None:
            if command.org == DEFAULT_ORG:
                self.device_orgs.pop(command.device_id, None)
            else:
                self.device_orgs[command.device_id] = command.org
        if command.container_no is not None:
            for devices in self.containers.values():
                if command.device_id in devices:
                    devices.remove(command.device_id)
            self.containers.setdefault(command.container_no, []).append(command.device_id)

    async def submit(
        self,
        command: Command,
        timeout: float = 5.0,
        *,
        dead_letter: bool = False,
    ) -> None:
        """Hand an API-originated fact to the single writer and wait until it is stored.

        Raises ``StoreUnavailableError`` when it could not be stored within ``timeout`` seconds (the fact
        is then withdrawn, not stored later) and ``CommandRejectedError`` when the database refused its
        content, unless ``dead_letter`` (device ingest over HTTP), where a refused fix is dead-lettered.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        await self.commands.put(_Queued(command, fut, loop.time() + timeout, dead_letter))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout + 1.0)
        except TimeoutError:
            fut.cancel()
            raise StoreUnavailableError(f"not stored within {timeout:.0f} s") from None
