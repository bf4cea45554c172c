"""Fence sets in force: loading them at start, installing a new index between batches, API changes.

A part of ``Service`` (tracker/service.py) of its own because a fence change is the one command that
rebuilds shared structures (the index, the pipeline's view of it, every device's timers) while
ingest runs; everything it changes is swapped whole between two batches, so a batch never sees half
a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from geofences import Fence, FenceIndex, FenceSet, load_fence_set
from tracker.adapters.errors import (
    CommandRejectedError,
)
from tracker.adapters.store_fences import FenceConflictError, FenceVersion, content_sha256
from tracker.commands import ChangeFences
from tracker.service_base import ServiceBase

log = logging.getLogger(__name__)


@dataclass
class Fences:
    """The fence sets in force, their versions and their index; swapped whole when a set changes.

    ``files``: ports whose set comes from a fence file (``TRACKER_FENCE_FILES``): the file wins over
    the database at every start, so such a port is not changed through the API.
    """

    sets: dict[str, FenceSet] = field(default_factory=dict)
    index: FenceIndex = field(default_factory=lambda: FenceIndex([]))
    versions: dict[str, FenceVersion] = field(default_factory=dict)
    files: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        sets: Iterable[FenceSet],
        hysteresis_m: float,
        entry_margin_m: float = 10.0,
        *,
        versions: Mapping[str, FenceVersion] | None = None,
        files: frozenset[str] = frozenset(),
    ) -> Fences:
        by_port = {s.port: s for s in sets}
        fences: list[Fence] = [f for s in by_port.values() for f in s.fences]
        index = FenceIndex(fences, hysteresis_m=hysteresis_m, entry_margin_m=entry_margin_m)
        kept = {p: v for p, v in (versions or {}).items() if p in by_port}
        return cls(by_port, index, kept, files)

    def stamps(self) -> dict[str, dict[str, object]]:
        """{port: {version, sha256}} of every set in force, for the alerts a batch raises."""
        return {p: v.stamp() for p, v in self.versions.items()}


class FenceControl(ServiceBase):
    """Loading, installing and changing the fence sets (a part of ``Service``)."""

    async def reload_fences(self) -> None:
        """The newest stored version of every port, then the fence files (which win for their port)."""
        assert self.fence_store is not None
        sets: list[FenceSet] = []
        versions: dict[str, FenceVersion] = {}
        for version, doc in await self.fence_store.current():
            if version.change != "migrated" and content_sha256(doc) != version.sha256:
                log.error(
                    "fence set %r version %s does not hash to what was stored when it was made: edited in place?",
                    version.port,
                    version.version,
                )
            fs = load_fence_set(doc)
            sets.append(fs)
            versions[fs.port] = version
        files: set[str] = set()
        for path in self.settings.fence_files:
            fs = load_fence_set(path)
            if fs.port in versions:
                log.warning("fence file %s replaces stored version %s of %r", path, versions[fs.port].version, fs.port)
            versions[fs.port] = FenceVersion(
                fs.port, None, content_sha256(fs.to_geojson()), "file", None, "file", None, len(fs.fences)
            )
            files.add(fs.port)
            sets.append(fs)
        s = self.settings
        # off the event loop: indexing a large port takes most of a second
        built = await asyncio.to_thread(
            Fences.build, sets, s.hysteresis_m, s.entry_margin_m, versions=versions, files=frozenset(files)
        )
        self._install(built)

    def _install(self, fences: Fences) -> None:
        """Put a new fence index in force between two batches; every device keeps its state."""
        self.fences = fences
        self.pipeline = self.pipeline.with_index(self.fences.index)  # keeps the world view and the hauls
        self._forget_removed_fences()
        self._reschedule_all()  # whether a zone authorizes a stop, hence a rendezvous timer, is the index's
        log.info(
            "fences: %s",
            ", ".join(
                f"{p}={len(fs.fences)} (v{getattr(fences.versions.get(p), 'version', None) or 'file'})"
                for p, fs in self.fences.sets.items()
            )
            or "none loaded",
        )

    def _forget_removed_fences(self) -> None:
        """A device inside a fence that no longer exists is simply no longer inside it.

        The core looks every fence of a device's membership up in the index; an id the new index does
        not know (its fence was deleted) would fail every later fix of that device. Dropping it here
        ends the membership without an exit alert (the fence is gone, not left); the next fix stores it.
        """
        index = self.fences.index
        for dev, state in list(self.states.items()):
            if any(f not in index for f in state.fences):
                kept = state.copy()  # states handed out are never changed: a new one replaces it
                kept.fences = frozenset(f for f in state.fences if f in index)
                self.states[dev] = kept

    async def _change_fences(self, command: ChangeFences, deadline: float) -> None:
        """Store a new version of a port's fence set and put it in force, or refuse it whole."""
        assert self.fence_store is not None
        port = command.fence_set.port
        if port in self.fences.files:
            raise FenceConflictError(
                f"fence set {port!r} comes from a fence file (TRACKER_FENCE_FILES); change it there"
            )
        current = self.fences.versions.get(port)
        base = current.version if current is not None and current.version is not None else 0
        if base != command.base:
            raise FenceConflictError(f"fence set {port!r} is at version {base}, not {command.base}; retry")
        s = self.settings
        sets = [fs for p, fs in self.fences.sets.items() if p != port] + [command.fence_set]
        try:  # indexed before it is stored: a set that cannot be put in force is never a version
            built = await asyncio.to_thread(
                Fences.build,
                sets,
                s.hysteresis_m,
                s.entry_margin_m,
                versions=self.fences.versions,
                files=self.fences.files,
            )
        except ValueError as exc:  # a fence id another port already uses
            raise CommandRejectedError(str(exc)) from exc
        try:
            async with asyncio.timeout_at(deadline):
                saved = await self.fence_store.save(
                    command.fence_set,
                    base=base,
                    author=command.author,
                    change=command.change,
                    fence_id=command.fence_id,
                )
        except Exception:
            # the database may be ahead of memory (another writer, or a commit whose answer was lost):
            # catch up so that the caller's retry builds on what is really stored
            with contextlib.suppress(Exception):
                await self.reload_fences()
            raise
        built.versions[port] = saved
        self._install(built)
        log.info("fence set %r is now version %d (%s by %s)", port, saved.version, command.change, command.author)

    @property
    def fence_sets(self) -> Mapping[str, FenceSet]:
        return self.fences.sets

    @property
    def fence_versions(self) -> Mapping[str, FenceVersion]:
        return self.fences.versions

    def _fence_port(self, fence_id: str) -> str | None:
        try:
            return self.fences.index.get(fence_id).port
        except KeyError:
            return None
