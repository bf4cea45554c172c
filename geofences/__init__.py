"""Port geofences: fence model, spatial index and transition classification (pure, shapely only)."""

from geofences.circle import MAX_RADIUS_M, MIN_RADIUS_M, Circle, CircleError, circle_polygon
from geofences.fence import (
    DEFAULT_CORRIDOR_WIDTH_M,
    WGS84_CRS_NAMES,
    Fence,
    FenceError,
    FenceKind,
    FenceSet,
    TimeWindow,
    available_ports,
    load_fence_set,
    load_port,
)
from geofences.geo import EARTH_RADIUS_M, LocalProjection, buffer_m, distance_m, haversine_m, within_m
from geofences.index import DEFAULT_CELL_DEG, FenceIndex
from geofences.transitions import Transition, TransitionKind, classify, steady_state

__all__ = [
    "DEFAULT_CELL_DEG",
    "DEFAULT_CORRIDOR_WIDTH_M",
    "EARTH_RADIUS_M",
    "MAX_RADIUS_M",
    "MIN_RADIUS_M",
    "WGS84_CRS_NAMES",
    "Circle",
    "CircleError",
    "Fence",
    "FenceError",
    "FenceIndex",
    "FenceKind",
    "FenceSet",
    "LocalProjection",
    "TimeWindow",
    "Transition",
    "TransitionKind",
    "available_ports",
    "buffer_m",
    "circle_polygon",
    "classify",
    "distance_m",
    "haversine_m",
    "load_fence_set",
    "load_port",
    "steady_state",
    "within_m",
]
