"""Latest position of every device, indexed for "who is near here" in O(neighbours).

Cross-device detectors (rendezvous, pairing, "another vehicle alongside") ask this view
instead of comparing all pairs. It is a uniform grid hash in a local metric frame: a 30 m
query touches 3 x 3 cells of 100 m, a 1 km truck search by a moving container a few hundred
(measured: 250 m cells made every query of a crowded yard scan hundreds of devices, and a
synthetic fleet of 8,000 devices in Santos' fences took 6x longer to replay).

Each device kind has its own grid: a container looking for the truck hauling it searches up to a
kilometre, and in a terminal that radius holds thousands of stacked boxes and a few trucks; a query for
one kind never walks the other's cells (the 100,000-device state build was quadratic in yard density
through exactly that search).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from geofences import EARTH_RADIUS_M, haversine_m
from tracker.core.model import DeviceKind

METRES_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True, slots=True)
class Position:
    device_id: str
    kind: DeviceKind
    ts: datetime
    lon: float
    lat: float
    stationary_since: datetime | None = None  # None while moving
    authorized: bool = False  # inside a zone where stopping is authorized
    paired_with: str | None = None  # a container's truck, or a truck's container: standing together is expected
    outside_since: datetime | None = None  # standing outside every such zone since (None: moving or inside one)
    speed: float | None = None  # m/s the tracker reported with this fix, when it did
    centre: tuple[float, float] | None = None  # (lon, lat) of its stop's cluster while stationary: outliers excluded


class World:
    def __init__(self, cell_m: float = 100.0) -> None:
        self.cell_m = cell_m
        self._pos: dict[str, Position] = {}
        self._grids: dict[DeviceKind, dict[tuple[int, int], set[str]]] = {k: {} for k in DeviceKind}
        self._cell_of: dict[str, tuple[DeviceKind, tuple[int, int]]] = {}

    def _cell(self, lon: float, lat: float) -> tuple[int, int]:
        # Cells are fixed in degrees (a point's column must not depend on its own latitude, or two
        # points at one longitude land in shifted columns); queries widen east-west instead.
        return (math.floor(lon * METRES_PER_DEG / self.cell_m), math.floor(lat * METRES_PER_DEG / self.cell_m))

    def update(self, pos: Position) -> None:
        cell = (pos.kind, self._cell(pos.lon, pos.lat))
        old = self._cell_of.get(pos.device_id)
        if old != cell:  # (most fixes stay in their 100 m cell: it already lists the device)
            if old is not None:
                self._leave(pos.device_id, old)
            self._grids[cell[0]].setdefault(cell[1], set()).add(pos.device_id)
            self._cell_of[pos.device_id] = cell
        self._pos[pos.device_id] = pos

    def _leave(self, device_id: str, where: tuple[DeviceKind, tuple[int, int]]) -> None:
        grid = self._grids[where[0]]
        members = grid.get(where[1])
        if members is not None:
            members.discard(device_id)
            if not members:
                del grid[where[1]]

    def remove(self, device_id: str) -> None:
        where = self._cell_of.pop(device_id, None)
        self._pos.pop(device_id, None)
        if where is not None:
            self._leave(device_id, where)

    def get(self, device_id: str) -> Position | None:
        return self._pos.get(device_id)

    def near(
        self,
        lon: float,
        lat: float,
        radius_m: float,
        *,
        exclude: str | None = None,
        kind: DeviceKind | None = None,
    ) -> list[tuple[float, Position]]:
        """Devices within ``radius_m`` of a point, nearest first, as (distance m, position); only those of
        ``kind`` when given (the same list, filtered, without walking the other kinds' cells)."""
        reach_y = max(1, math.ceil(radius_m / self.cell_m))
        poleward = min(89.0, abs(lat) + radius_m / METRES_PER_DEG)
        reach_x = max(1, math.ceil(radius_m / (self.cell_m * math.cos(math.radians(poleward)))))
        cx, cy = self._cell(lon, lat)
        # No point within radius_m can differ by more than these in latitude and longitude: a path of length d
        # changes latitude by at most d / R and, staying below ``poleward``, longitude by at most
        # d / (R cos poleward). Cheap comparisons settle most of a crowded cell before any trigonometry.
        slack = 1.0 + 1e-9
        dlat = radius_m / METRES_PER_DEG * slack
        dlon = radius_m / (METRES_PER_DEG * math.cos(math.radians(poleward))) * slack
        out: list[tuple[float, Position]] = []
        positions = self._pos
        grids = self._grids.values() if kind is None else (self._grids[kind],)
        for cells in grids:
            if not cells:
                continue
            for dx in range(-reach_x, reach_x + 1):
                for dy in range(-reach_y, reach_y + 1):
                    for dev in cells.get((cx + dx, cy + dy), ()):
                        if dev == exclude:
                            continue
                        pos = positions[dev]
                        if abs(pos.lat - lat) > dlat or abs(pos.lon - lon) > dlon:
                            continue
                        d = haversine_m(lon, lat, pos.lon, pos.lat)
                        if d <= radius_m:
                            out.append((d, pos))
        out.sort(key=lambda item: (item[0], item[1].device_id))
        return out

    def __len__(self) -> int:
        return len(self._pos)

    def __iter__(self) -> Iterator[Position]:
        return iter(list(self._pos.values()))
