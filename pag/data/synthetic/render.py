"""Render a `Scene` into RGB and exactly consistent ground truth for all four tasks.

One primary ray per pixel (no anti-aliasing, so every label is the label of the surface the
pixel's ray hits); z-buffered against the room and every primitive, each primitive tested only
inside its projected screen rectangle. Shading is Lambertian with point lights, hard shadows,
an ambient term and auto-exposure; windows show an unshaded outdoor gradient and are invalid
for depth and normals, as glass is for RGB-D sensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pag.data.codecs import boundaries_from_regions
from pag.data.sample import IGNORE_INDEX
from pag.data.synthetic.geometry import EPS, Primitive, intersect_room
from pag.data.synthetic.scene import TEXTURES, Material, Scene

_NEAR = 0.05
_GAMMA = 1 / 2.2


@dataclass(frozen=True)
class Rendering:
    rgb: np.ndarray  # H x W x 3 uint8
    depth: np.ndarray  # H x W float64 metres along the optical axis, 0 = invalid
    normals: np.ndarray  # H x W x 3 unit vectors in the camera frame, 0 = invalid
    semantic: np.ndarray  # H x W uint8, IGNORE_INDEX = unlabelled
    instance: np.ndarray  # H x W uint16, >= 1
    boundary: np.ndarray  # H x W uint8 0/1

    @property
    def valid(self) -> np.ndarray:
        return self.depth > 0


def screen_rect(scene: Scene, prim: Primitive) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (v0, v1, u0, u1) covering the primitive's oriented bounding box, or None
    when it lies behind the camera."""
    cam = (prim.corners() - scene.camera_position) @ scene.camera_rotation
    if (cam[:, 2] <= _NEAR).all():
        return None
    if (cam[:, 2] <= _NEAR).any():
        return 0, scene.height, 0, scene.width
    k = scene.intrinsics
    u = k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2]
    v = k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2]
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, scene.width)
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, scene.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def value_noise(uv: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] from a periodic random lattice."""
    n = grid.shape[0]
    base = np.floor(uv)
    frac = uv - base
    i0 = base.astype(np.int64) % n
    i1 = (i0 + 1) % n
    w = frac * frac * (3.0 - 2.0 * frac)
    a = grid[i0[:, 0], i0[:, 1]] * (1 - w[:, 0]) + grid[i1[:, 0], i0[:, 1]] * w[:, 0]
    b = grid[i0[:, 0], i1[:, 1]] * (1 - w[:, 0]) + grid[i1[:, 0], i1[:, 1]] * w[:, 0]
    return a * (1 - w[:, 1]) + b * w[:, 1]


def texture(material: Material, uv: np.ndarray) -> np.ndarray:
    """Albedo (M x 3) of a procedural material at surface coordinates uv (metres)."""
    kind = TEXTURES[material.texture]
    scaled = uv / material.scale
    if kind == "flat":
        weight = 0.15 * value_noise(scaled * 0.5, material.grid)
    elif kind == "stripes":
        s = scaled[:, 0] * np.cos(material.angle) + scaled[:, 1] * np.sin(material.angle)
        weight = ((s - np.floor(s)) < 0.5).astype(float)
    elif kind == "checker":
        weight = (np.floor(scaled).sum(axis=1) % 2).astype(float)
    else:
        weight = value_noise(scaled, material.grid)
    return material.color_a + weight[:, None] * (material.color_b - material.color_a)


def _occluded(scene: Scene, points: np.ndarray, light: np.ndarray) -> np.ndarray:
    """True where the segment point -> light hits a primitive (hard shadows).

    Candidates come from a perspective projection centred on the light onto a horizontal plane
    below it: it maps segments to segments, so the rectangle around a primitive's projected
    box corners bounds every point it can shadow. Only candidates get the exact ray test.
    Lights hang above every shadow caster; a caster reaching the light's height falls back to
    testing all points."""
    to_light = light - points
    below = to_light[:, 2] > EPS  # points at or above the light: nothing below can block them
    depth = np.where(below, to_light[:, 2], 1.0)
    plane = -to_light[:, :2] / depth[:, None]  # where the ray light -> point crosses z_light - 1
    blocked = np.zeros(len(points), dtype=bool)
    for prim in scene.primitives:
        if not prim.casts_shadow:
            continue
        corners = prim.corners() - light
        if (corners[:, 2] > -EPS).any():
            near = ~blocked
        else:
            projected = corners[:, :2] / -corners[:, 2:3]
            lo, hi = projected.min(axis=0), projected.max(axis=0)
            near = (
                below
                & ~blocked
                & (depth > -corners[:, 2].max())
                & (plane[:, 0] >= lo[0])
                & (plane[:, 0] <= hi[0])
                & (plane[:, 1] >= lo[1])
                & (plane[:, 1] <= hi[1])
            )
        if near.any():
            hits = prim.intersect(points[near], to_light[near], surface=False)
            blocked[np.flatnonzero(near)[hits.t < 1.0 - EPS]] = True
    return blocked


def render(scene: Scene) -> Rendering:
    h, w = scene.height, scene.width
    v_grid, u_grid = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    rays = scene.pixel_rays(u_grid, v_grid)  # H x W x 3
    origin = scene.camera_position

    t, surface, normal, uv = intersect_room(origin, rays.reshape(-1, 3), scene.room)
    instance = surface + 1
    material = np.asarray(scene.room_materials)[surface]
    window = np.zeros(h * w, dtype=bool)
    if scene.windows:
        point = origin + t[:, None] * rays.reshape(-1, 3)
        for rect in scene.windows:
            along = point[:, 1] if rect.surface in (2, 3) else point[:, 0]
            inside = (
                (surface == rect.surface)
                & (along >= rect.s_range[0])
                & (along <= rect.s_range[1])
                & (point[:, 2] >= rect.z_range[0])
                & (point[:, 2] <= rect.z_range[1])
            )
            instance[inside] = rect.instance
            window |= inside

    # z-buffer the primitives, each inside its screen rectangle
    t2, n2, uv2 = t.reshape(h, w), normal.reshape(h, w, 3), uv.reshape(h, w, 2)
    inst2, mat2, win2 = instance.reshape(h, w), material.reshape(h, w), window.reshape(h, w)
    for prim in scene.primitives:
        rect = screen_rect(scene, prim)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        hits = prim.intersect(origin, rays[v0:v1, u0:u1].reshape(-1, 3))
        shape = (v1 - v0, u1 - u0)
        closer = hits.t.reshape(shape) < t2[v0:v1, u0:u1]
        if not closer.any():
            continue
        t2[v0:v1, u0:u1][closer] = hits.t.reshape(shape)[closer]
        n2[v0:v1, u0:u1][closer] = hits.normal.reshape(*shape, 3)[closer]
        uv2[v0:v1, u0:u1][closer] = hits.uv.reshape(*shape, 2)[closer]
        inst2[v0:v1, u0:u1][closer] = prim.instance
        mat2[v0:v1, u0:u1][closer] = prim.material
        win2[v0:v1, u0:u1][closer] = False

    # albedo from each material's procedural texture
    albedo = np.zeros((h * w, 3))  # windows keep 0 here: their colour is the sky
    solid = ~window
    for index in np.unique(material[solid]):
        sel = solid & (material == index)
        albedo[sel] = texture(scene.materials[index], uv[sel])

    # Lambertian shading with hard shadows
    point = origin + t[:, None] * rays.reshape(-1, 3)
    shade = np.full(h * w, scene.ambient)
    for light, intensity in scene.lights:
        to_light = light - point
        dist2 = np.einsum("ij,ij->i", to_light, to_light)
        cosine = np.einsum("ij,ij->i", normal, to_light) / np.sqrt(dist2)
        idx = np.flatnonzero(solid & (cosine > 0))
        visible = ~_occluded(scene, point[idx] + 1e-4 * normal[idx], light)
        shade[idx[visible]] += (
            intensity * cosine[idx[visible]] * 3.0 / (1.0 + 0.25 * dist2[idx[visible]])
        )
    radiance = albedo * shade[:, None]
    if solid.any():
        # auto-exposure: the 97th percentile of the brightest channel maps to 0.85
        bright = radiance[solid][::4].max(axis=1)  # every 4th pixel is plenty for a percentile
        k = int(0.97 * (len(bright) - 1))
        gain = np.clip(0.85 / max(float(np.partition(bright, k)[k]), 1e-6), 0.5, 3.0)
        radiance *= gain
    if window.any():
        d = rays.reshape(-1, 3)[window]
        elevation = d[:, 2] / np.linalg.norm(d, axis=1)
        horizon, zenith, ground = scene.sky
        up = np.clip(elevation * 2.5, 0.0, 1.0)[:, None]
        sky = horizon + up * (zenith - horizon)
        radiance[window] = np.where(elevation[:, None] < -0.02, ground, sky)
    noise_rng = np.random.default_rng(scene.noise_seed)
    noise = noise_rng.standard_normal(radiance.shape, dtype=np.float32) * np.float32(
        scene.noise_sigma
    )
    rgb = np.clip(np.clip(radiance, 0.0, 1.0) ** _GAMMA + noise, 0.0, 1.0)
    rgb = np.rint(rgb * 255.0).astype(np.uint8).reshape(h, w, 3)

    # ground truth: depth and normals invalid through windows (glass), camera-frame normals
    depth = np.where(window, 0.0, t).reshape(h, w)
    normals_cam = np.where(window[:, None], 0.0, normal @ scene.camera_rotation).reshape(h, w, 3)
    lut = np.full(max(scene.instance_class) + 1, IGNORE_INDEX, dtype=np.uint8)
    for inst, cls in scene.instance_class.items():
        lut[inst] = cls
    inst_map = instance.reshape(h, w).astype(np.uint16)
    return Rendering(
        rgb=rgb,
        depth=depth,
        normals=normals_cam,
        semantic=lut[inst_map],
        instance=inst_map,
        boundary=boundaries_from_regions(inst_map),
    )
