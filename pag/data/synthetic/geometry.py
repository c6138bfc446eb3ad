"""Vectorised ray casting against the primitives of a synthetic room.

Rays are `origin + t * direction` with unnormalised directions: primary rays use camera-frame
directions with z = 1, so the hit parameter t *is* the z-depth. Every function takes rays as
(M, 3) arrays (the origin may be a single (3,) point) and returns, per ray, the hit parameter
(`inf` for a miss), the outward unit normal and 2-D surface coordinates in metres for texturing,
all in the frame the rays were given in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6
_UNIT_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)


@dataclass(frozen=True)
class Hits:
    t: np.ndarray  # (M,) hit parameter, inf where missed
    normal: np.ndarray | None  # (M, 3) outward unit normal (None when not asked for)
    uv: np.ndarray | None  # (M, 2) surface coordinates in metres (None when not asked for)


@dataclass(frozen=True)
class Primitive:
    """A box, sphere or (capped) cylinder placed in the world.

    `rotation` maps local to world coordinates (columns are the local axes); `size` is the
    half-extents (box), (radius,) (sphere) or (radius, half-height along local z) (cylinder).
    """

    kind: str
    center: np.ndarray
    rotation: np.ndarray
    size: np.ndarray
    instance: int
    material: int
    casts_shadow: bool = True  # False for panels flush with a wall: their shadow is sub-pixel

    def half_extents(self) -> np.ndarray:
        """Half-extents of the local-frame bounding box."""
        if self.kind == "box":
            return self.size
        if self.kind == "sphere":
            return np.repeat(self.size[0], 3)
        return np.array([self.size[0], self.size[0], self.size[1]])

    def corners(self) -> np.ndarray:
        """The 8 world-space corners of the oriented bounding box."""
        return self.center + (_UNIT_CORNERS * self.half_extents()) @ self.rotation.T

    def bounding_radius(self) -> float:
        if self.kind == "box":
            return float(np.linalg.norm(self.size))
        if self.kind == "sphere":
            return float(self.size[0])
        return float(np.hypot(self.size[0], self.size[1]))

    def intersect(self, origin: np.ndarray, direction: np.ndarray, surface: bool = True) -> Hits:
        """Intersect world-frame rays; normals and uv (only if `surface`) in the world frame."""
        o_local = (origin - self.center) @ self.rotation
        d_local = direction @ self.rotation
        if self.kind == "box":
            hits = intersect_box(o_local, d_local, self.size, surface)
        elif self.kind == "sphere":
            hits = intersect_sphere(o_local, d_local, float(self.size[0]), surface)
        elif self.kind == "cylinder":
            r, half = float(self.size[0]), float(self.size[1])
            hits = intersect_cylinder(o_local, d_local, r, half, surface)
        else:
            raise ValueError(f"unknown primitive kind {self.kind!r}")
        if not surface:
            return hits
        return Hits(hits.t, hits.normal @ self.rotation.T, hits.uv)


def intersect_box(
    origin: np.ndarray, direction: np.ndarray, half: np.ndarray, surface: bool = True
) -> Hits:
    """Axis-aligned box centred at 0 (slab method); rays starting inside count as misses."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / direction
        t1 = (-half - origin) * inv
        t2 = (half - origin) * inv
    t_lo = np.fmin(t1, t2)
    t_hi = np.fmax(t1, t2)
    t_near = t_lo.max(axis=1)
    t_far = t_hi.min(axis=1)
    hit = (t_near <= t_far) & (t_near > EPS)
    t = np.where(hit, t_near, np.inf)
    if not surface:
        return Hits(t, None, None)
    axis = t_lo.argmax(axis=1)
    rows = np.arange(len(t))
    normal = np.zeros_like(direction)
    normal[rows, axis] = -np.sign(direction[rows, axis])
    point = origin + np.where(hit, t, 0.0)[:, None] * direction
    # texture coordinates: the two coordinates spanning the face that was hit
    first = np.where(axis == 0, 1, 0)
    second = np.where(axis == 2, 1, 2)
    uv = np.stack([point[rows, first], point[rows, second]], axis=1)
    return Hits(t, normal, uv)


def intersect_sphere(
    origin: np.ndarray, direction: np.ndarray, radius: float, surface: bool = True
) -> Hits:
    a = np.einsum("ij,ij->i", direction, direction)
    oc = np.broadcast_to(origin, direction.shape)
    b = 2.0 * np.einsum("ij,ij->i", direction, oc)
    c = np.einsum("ij,ij->i", oc, oc) - radius * radius
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = (-b - root) / (2.0 * a)
    hit = (disc >= 0.0) & (t > EPS)
    t = np.where(hit, t, np.inf)
    if not surface:
        return Hits(t, None, None)
    point = oc + np.where(hit, t, 0.0)[:, None] * direction
    normal = point / radius
    uv = np.stack(
        [
            radius * np.arctan2(normal[:, 1], normal[:, 0]),
            radius * np.arcsin(np.clip(normal[:, 2], -1, 1)),
        ],
        axis=1,
    )
    return Hits(t, normal, uv)


def intersect_cylinder(
    origin: np.ndarray,
    direction: np.ndarray,
    radius: float,
    half_height: float,
    surface: bool = True,
) -> Hits:
    """Capped cylinder around the local z axis, from -half_height to +half_height."""
    o = np.broadcast_to(origin, direction.shape)
    dx, dy, dz = direction[:, 0], direction[:, 1], direction[:, 2]
    ox, oy, oz = o[:, 0], o[:, 1], o[:, 2]
    a = dx * dx + dy * dy
    b = 2.0 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - 4.0 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
        z_side = oz + t_side * dz
        side_ok = (disc >= 0.0) & (a > 0) & (t_side > EPS) & (np.abs(z_side) <= half_height)
        t_side = np.where(side_ok, t_side, np.inf)
        # the cap facing the ray: top when travelling down, bottom when travelling up
        cap_z = np.where(dz < 0, half_height, -half_height)
        t_cap = (cap_z - oz) / dz
        cx = ox + t_cap * dx
        cy = oy + t_cap * dy
        cap_ok = (t_cap > EPS) & (cx * cx + cy * cy <= radius * radius)
    t_cap = np.where(cap_ok, t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    if not surface:
        return Hits(t, None, None)
    on_cap = t_cap < t_side
    hit = np.isfinite(t)
    point = o + np.where(hit, t, 0.0)[:, None] * direction
    normal = np.zeros_like(direction)
    normal[:, 0] = np.where(on_cap, 0.0, point[:, 0] / radius)
    normal[:, 1] = np.where(on_cap, 0.0, point[:, 1] / radius)
    normal[:, 2] = np.where(on_cap, np.sign(cap_z), 0.0)
    angle = radius * np.arctan2(point[:, 1], point[:, 0])
    uv = np.stack(
        [np.where(on_cap, point[:, 0], angle), np.where(on_cap, point[:, 1], point[:, 2])], 1
    )
    return Hits(t, normal, uv)


def intersect_room(origin: np.ndarray, direction: np.ndarray, dims: np.ndarray):
    """Rays from inside the room [0, dims] leave through exactly one of its six planes.

    Returns (t, surface, normal, uv) where surface is 0 floor, 1 ceiling, 2 wall x=0,
    3 wall x=W, 4 wall y=0, 5 wall y=D, and normals point into the room.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(direction > 0, dims, 0.0)
        t_axes = (bound - origin) / direction
    t_axes = np.where(np.isfinite(t_axes) & (t_axes > 0), t_axes, np.inf)
    axis = t_axes.argmin(axis=1)
    rows = np.arange(len(direction))
    t = t_axes[rows, axis]
    positive = direction[rows, axis] > 0
    # surface ids: z -> floor/ceiling (0/1), x -> walls 2/3, y -> walls 4/5
    surface = np.choose(axis, [2 + positive, 4 + positive, 0 + positive])
    normal = np.zeros_like(direction)
    normal[rows, axis] = np.where(positive, -1.0, 1.0)
    point = origin + t[:, None] * direction
    first = np.where(axis == 0, 1, 0)
    second = np.where(axis == 2, 1, 2)
    uv = np.stack([point[rows, first], point[rows, second]], axis=1)
    return t, surface, normal, uv
