"""Random indoor scenes: a room seen from a random camera, with furniture, wall items, lights
and procedural materials. A scene is pure data; `render.render` turns it into images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pag.data.sample import IGNORE_INDEX
from pag.data.synthetic.geometry import Primitive, intersect_room

CLASSES = (
    "floor",
    "ceiling",
    "wall",
    "window",
    "door",
    "picture",
    "cabinet",
    "table",
    "lamp",
    "ball",
)
CLASS_ID = {name: index for index, name in enumerate(CLASSES)}
CLUTTER = IGNORE_INDEX  # small unlabelled objects, as NYU's "unlabeled" pixels

TEXTURES = ("flat", "stripes", "checker", "noise")
NOISE_GRID = 16
# room surfaces (see geometry.intersect_room): instance ids 1..6
FLOOR, CEILING = 0, 1
WALLS = (2, 3, 4, 5)
_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Material:
    texture: int  # index into TEXTURES
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float  # period of the pattern in metres
    angle: float  # orientation of stripes
    grid: np.ndarray  # NOISE_GRID x NOISE_GRID lattice for value noise


@dataclass(frozen=True)
class WallRect:
    """An opening in a wall (a window): rays through it see the outdoors."""

    surface: int
    s_range: tuple[float, float]  # along the wall
    z_range: tuple[float, float]
    instance: int


@dataclass
class Scene:
    height: int
    width: int
    intrinsics: np.ndarray  # 3 x 3
    room: np.ndarray  # (W, D, H) in metres; the room spans [0, room]
    camera_position: np.ndarray
    camera_rotation: np.ndarray  # camera -> world, columns = (right, down, forward)
    room_materials: tuple[int, ...]  # material per room surface (6)
    materials: list[Material] = field(default_factory=list)
    primitives: list[Primitive] = field(default_factory=list)
    windows: list[WallRect] = field(default_factory=list)
    instance_class: dict[int, int] = field(default_factory=dict)
    lights: list[tuple[np.ndarray, float]] = field(default_factory=list)
    ambient: float = 0.3
    sky: tuple[np.ndarray, np.ndarray, np.ndarray] = ()  # horizon, zenith, ground colours
    noise_sigma: float = 0.01
    noise_seed: int = 0

    def pixel_rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """World-frame directions (camera z = 1) through pixel coordinates (centres at +0.5)."""
        k = self.intrinsics
        cam = np.stack(
            [(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u, dtype=float)], -1
        )
        return cam @ self.camera_rotation.T


def camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera -> world rotation for a camera looking along (yaw, pitch), z up in the world."""
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(forward, _UP)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward], axis=1)


def yaw_rotation(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _random_color(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
):
    hue = rng.uniform(0, 1)
    sat = rng.uniform(*saturation)
    val = rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# per-class texture priors: probabilities over TEXTURES, scale range (m), saturation, value
_MATERIAL_PRIORS = {
    "floor": ((0.2, 0.35, 0.25, 0.2), (0.15, 0.6), (0.1, 0.6), (0.25, 0.8)),
    "ceiling": ((0.85, 0.0, 0.0, 0.15), (0.3, 1.0), (0.0, 0.1), (0.75, 0.95)),
    "wall": ((0.55, 0.2, 0.05, 0.2), (0.1, 0.5), (0.0, 0.35), (0.5, 0.95)),
    "door": ((0.5, 0.3, 0.0, 0.2), (0.05, 0.3), (0.2, 0.7), (0.3, 0.9)),
    "picture": ((0.1, 0.3, 0.3, 0.3), (0.03, 0.2), (0.3, 1.0), (0.2, 1.0)),
    "cabinet": ((0.35, 0.25, 0.15, 0.25), (0.05, 0.4), (0.1, 0.8), (0.2, 0.9)),
    "table": ((0.3, 0.4, 0.1, 0.2), (0.03, 0.2), (0.2, 0.7), (0.2, 0.8)),
    "lamp": ((0.7, 0.1, 0.0, 0.2), (0.05, 0.2), (0.0, 0.6), (0.3, 1.0)),
    "ball": ((0.3, 0.25, 0.25, 0.2), (0.03, 0.15), (0.3, 1.0), (0.3, 1.0)),
    "clutter": ((0.25, 0.25, 0.25, 0.25), (0.02, 0.15), (0.0, 1.0), (0.1, 1.0)),
}


class SceneBuilder:
    """Samples one scene from a random generator; all randomness flows through `rng`."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, focal: float):
        self.rng = rng
        self.height = height
        self.width = width
        self.focal = focal
        self.scene: Scene | None = None
        self.footprints: list[tuple[float, float, float]] = []  # (x, y, radius) on the floor
        self.wall_items: list[tuple[int, float, float, float, float]] = []
        self.next_instance = 7

    # -- materials -------------------------------------------------------------------------
    def material(self, kind: str) -> int:
        probs, scale, sat, val = _MATERIAL_PRIORS[kind]
        rng = self.rng
        color_a = _random_color(rng, sat, val)
        color_b = (
            color_a * rng.uniform(0.35, 0.8)
            if rng.uniform() < 0.6
            else _random_color(rng, sat, val)
        )
        mat = Material(
            texture=int(rng.choice(len(TEXTURES), p=probs)),
            color_a=color_a,
            color_b=color_b,
            scale=float(rng.uniform(*scale)),
            angle=float(rng.uniform(0, np.pi)),
            grid=rng.uniform(0.0, 1.0, size=(NOISE_GRID, NOISE_GRID)),
        )
        self.scene.materials.append(mat)
        return len(self.scene.materials) - 1

    def new_instance(self, cls: int) -> int:
        instance = self.next_instance
        self.next_instance += 1
        self.scene.instance_class[instance] = cls
        return instance

    # -- the whole scene -------------------------------------------------------------------
    def build(self) -> Scene:
        rng = self.rng
        room = np.array([rng.uniform(3.0, 7.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 3.2)])
        position = np.array(
            [
                rng.uniform(0.5, room[0] - 0.5),
                rng.uniform(0.5, room[1] - 0.5),
                rng.uniform(1.0, 1.8),
            ]
        )
        to_centre = room[:2] / 2 - position[:2]
        yaw = np.arctan2(to_centre[1], to_centre[0]) + rng.uniform(-0.9, 0.9)
        rotation = camera_rotation(
            yaw, np.radians(rng.uniform(-30, 5)), np.radians(rng.uniform(-4, 4))
        )
        k = np.array(
            [[self.focal, 0.0, self.width / 2], [0.0, self.focal, self.height / 2], [0.0, 0.0, 1.0]]
        )
        self.scene = scene = Scene(
            height=self.height,
            width=self.width,
            intrinsics=k,
            room=room,
            camera_position=position,
            camera_rotation=rotation,
            room_materials=(),
        )
        floor, ceiling, wall = (
            self.material("floor"),
            self.material("ceiling"),
            self.material("wall"),
        )
        walls = [wall] * 4
        if rng.uniform() < 0.3:  # an accent wall
            walls[rng.integers(4)] = self.material("wall")
        scene.room_materials = (floor, ceiling, *walls)
        scene.instance_class.update({1: CLASS_ID["floor"], 2: CLASS_ID["ceiling"]})
        scene.instance_class.update({3 + i: CLASS_ID["wall"] for i in range(4)})

        for _ in range(rng.choice([0, 1, 1, 2])):
            self.add_window()
        if rng.uniform() < 0.6:
            self.add_wall_box("door")
        for _ in range(rng.integers(1, 4)):
            self.add_wall_box("picture")
        if rng.uniform() < 0.7:
            self.add_table()
        for _ in range(rng.integers(1, 3)):
            self.add_cabinet()
        if rng.uniform() < 0.6:
            self.add_lamp()
        for _ in range(rng.integers(1, 3)):
            self.add_ball()
        for _ in range(rng.integers(0, 4)):
            self.add_clutter()

        for index in range(1 if rng.uniform() < 0.6 else 2):
            light = np.array(
                [
                    rng.uniform(0.3, room[0] - 0.3),
                    rng.uniform(0.3, room[1] - 0.3),
                    room[2] - rng.uniform(0.1, 0.3),
                ]
            )
            scene.lights.append(
                (light, float(rng.uniform(0.6, 1.0) if index == 0 else rng.uniform(0.3, 0.6)))
            )
        scene.ambient = float(rng.uniform(0.15, 0.35))
        horizon = _random_color(rng, (0.0, 0.2), (0.85, 1.0))
        zenith = _random_color(rng, (0.3, 0.6), (0.7, 1.0))
        ground = _random_color(rng, (0.2, 0.6), (0.3, 0.6))
        scene.sky = (horizon, zenith, ground)
        scene.noise_sigma = float(rng.uniform(0.005, 0.02))
        scene.noise_seed = int(rng.integers(2**31))
        return scene

    # -- placement helpers -----------------------------------------------------------------
    def cast_pixels(self, v_range: tuple[float, float], count: int = 12):
        """Room hit points and surfaces behind `count` random pixels in rows `v_range` (fractions
        of the height), cast together: candidate spots for placing one object."""
        u = self.rng.uniform(0.05, 0.95, size=count) * self.width
        v = self.rng.uniform(*v_range, size=count) * self.height
        direction = self.scene.pixel_rays(u, v)
        t, surface, _, _ = intersect_room(self.scene.camera_position, direction, self.scene.room)
        return self.scene.camera_position + t[:, None] * direction, surface.tolist()

    def floor_spot(self, radius: float) -> tuple[float, float] | None:
        """A free floor position in view, at least 0.6 m from the camera, inside the room."""
        scene = self.scene
        for point, surface in zip(*self.cast_pixels((0.45, 0.98)), strict=True):
            if surface != FLOOR:
                continue
            x = float(np.clip(point[0], radius + 0.02, scene.room[0] - radius - 0.02))
            y = float(np.clip(point[1], radius + 0.02, scene.room[1] - radius - 0.02))
            if np.hypot(x - scene.camera_position[0], y - scene.camera_position[1]) < radius + 0.6:
                continue
            if any(np.hypot(x - fx, y - fy) < radius + fr + 0.05 for fx, fy, fr in self.footprints):
                continue
            self.footprints.append((x, y, radius))
            return x, y
        return None

    def wall_spot(self, half_width: float, z_range: tuple[float, float]):
        """A free place on a visible wall: (surface, s along the wall, ...) or None."""
        scene = self.scene
        for point, surface in zip(*self.cast_pixels((0.05, 0.7)), strict=True):
            if surface not in WALLS:
                continue
            along = 1 if surface in (2, 3) else 0  # walls x=0/x=W run along y
            length = scene.room[along]
            if length < 2 * half_width + 0.2:
                continue
            s = float(np.clip(point[along], half_width + 0.1, length - half_width - 0.1))
            z0, z1 = z_range
            clash = any(
                w == surface and abs(s - ws) < half_width + whw + 0.1 and z0 < wz1 and wz0 < z1
                for w, ws, whw, wz0, wz1 in self.wall_items
            )
            if clash:
                continue
            self.wall_items.append((surface, s, half_width, z0, z1))
            return surface, s
        return None

    def wall_frame(self, surface: int, s: float):
        """(point on the wall at height 0, inward normal, along-wall axis) for a wall position."""
        room = self.scene.room
        if surface in (2, 3):
            base = np.array([0.0 if surface == 2 else room[0], s, 0.0])
            return base, np.array([1.0 if surface == 2 else -1.0, 0, 0]), np.array([0.0, 1, 0])
        base = np.array([s, 0.0 if surface == 4 else room[1], 0.0])
        return base, np.array([0, 1.0 if surface == 4 else -1.0, 0]), np.array([1.0, 0, 0])

    # -- objects ---------------------------------------------------------------------------
    def add_window(self) -> None:
        rng = self.rng
        half_width = rng.uniform(0.4, 0.9)
        z0 = rng.uniform(0.7, 1.0)
        z1 = min(z0 + rng.uniform(0.9, 1.5), self.scene.room[2] - 0.15)
        spot = self.wall_spot(half_width, (z0, z1))
        if spot is not None:
            surface, s = spot
            instance = self.new_instance(CLASS_ID["window"])
            self.scene.windows.append(
                WallRect(surface, (s - half_width, s + half_width), (z0, z1), instance)
            )

    def add_wall_box(self, kind: str) -> None:
        rng = self.rng
        if kind == "door":
            half_width, z0 = rng.uniform(0.4, 0.5), 0.0
            z1, thickness = rng.uniform(1.95, 2.2), rng.uniform(0.03, 0.06)
        else:
            half_width = rng.uniform(0.15, 0.55)
            centre, half_height = rng.uniform(1.2, 1.8), rng.uniform(0.12, 0.4)
            z0, z1 = centre - half_height, min(centre + half_height, self.scene.room[2] - 0.1)
            thickness = rng.uniform(0.01, 0.04)
        spot = self.wall_spot(half_width, (z0, z1))
        if spot is None:
            return
        base, normal, along = self.wall_frame(*spot)
        centre = base + normal * thickness / 2 + _UP * (z0 + z1) / 2
        rotation = np.stack([along, normal, _UP], axis=1)
        instance = self.new_instance(CLASS_ID[kind])
        size = np.array([half_width, thickness / 2, (z1 - z0) / 2])
        panel = Primitive(
            "box", centre, rotation, size, instance, self.material(kind), casts_shadow=False
        )
        self.scene.primitives.append(panel)

    def add_cabinet(self) -> None:
        rng = self.rng
        half = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.9)])
        spot = self.floor_spot(float(np.hypot(half[0], half[1])))
        if spot is None:
            return
        rotation = yaw_rotation(
            rng.uniform(0, 2 * np.pi) if rng.uniform() < 0.5 else rng.integers(4) * np.pi / 2
        )
        instance = self.new_instance(CLASS_ID["cabinet"])
        centre = np.array([*spot, half[2]])
        self.scene.primitives.append(
            Primitive("box", centre, rotation, half, instance, self.material("cabinet"))
        )

    def add_table(self) -> None:
        rng = self.rng
        half_w, half_d = rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.5)
        spot = self.floor_spot(float(np.hypot(half_w, half_d)))
        if spot is None:
            return
        top_z, thickness = rng.uniform(0.68, 0.78), rng.uniform(0.03, 0.06)
        rotation = yaw_rotation(rng.uniform(0, 2 * np.pi))
        instance = self.new_instance(CLASS_ID["table"])
        material = self.material("table")
        x, y = spot
        top = Primitive(
            "box",
            np.array([x, y, top_z - thickness / 2]),
            rotation,
            np.array([half_w, half_d, thickness / 2]),
            instance,
            material,
        )
        self.scene.primitives.append(top)
        leg_radius, inset = rng.uniform(0.018, 0.035), rng.uniform(0.05, 0.1)
        leg_half = (top_z - thickness) / 2
        for sx in (-1, 1):
            for sy in (-1, 1):
                offset = rotation @ np.array([sx * (half_w - inset), sy * (half_d - inset), 0.0])
                centre = np.array([x, y, leg_half]) + offset
                leg = Primitive(
                    "cylinder",
                    centre,
                    rotation,
                    np.array([leg_radius, leg_half]),
                    instance,
                    material,
                )
                self.scene.primitives.append(leg)
        if rng.uniform() < 0.5:  # something on the table
            r = rng.uniform(0.05, 0.15)
            px, py = rng.uniform(-half_w + r, half_w - r), rng.uniform(-half_d + r, half_d - r)
            centre = np.array([x, y, top_z + r]) + rotation @ np.array([px, py, 0.0])
            cls = CLASS_ID["ball"] if rng.uniform() < 0.5 else CLUTTER
            kind = "ball" if cls == CLASS_ID["ball"] else "clutter"
            prim = Primitive(
                "sphere",
                centre,
                np.eye(3),
                np.array([r]),
                self.new_instance(cls),
                self.material(kind),
            )
            self.scene.primitives.append(prim)

    def add_lamp(self) -> None:
        rng = self.rng
        shade_r = rng.uniform(0.12, 0.2)
        spot = self.floor_spot(shade_r)
        if spot is None:
            return
        x, y = spot
        pole_top = rng.uniform(1.2, 1.6)
        shade_half = rng.uniform(0.1, 0.15)
        instance = self.new_instance(CLASS_ID["lamp"])
        material, shade_material = self.material("lamp"), self.material("lamp")
        eye = np.eye(3)
        parts = [
            ("cylinder", [x, y, 0.01], [rng.uniform(0.1, 0.15), 0.01], material),
            ("cylinder", [x, y, pole_top / 2], [rng.uniform(0.012, 0.022), pole_top / 2], material),
            ("cylinder", [x, y, pole_top + shade_half], [shade_r, shade_half], shade_material),
        ]
        for kind, centre, size, mat in parts:
            self.scene.primitives.append(
                Primitive(kind, np.array(centre), eye, np.array(size), instance, mat)
            )

    def add_ball(self) -> None:
        r = self.rng.uniform(0.1, 0.35)
        spot = self.floor_spot(r)
        if spot is not None:
            instance = self.new_instance(CLASS_ID["ball"])
            prim = Primitive(
                "sphere",
                np.array([*spot, r]),
                np.eye(3),
                np.array([r]),
                instance,
                self.material("ball"),
            )
            self.scene.primitives.append(prim)

    def add_clutter(self) -> None:
        rng = self.rng
        if rng.uniform() < 0.5:
            half = rng.uniform(0.03, 0.15, size=3)
            spot = self.floor_spot(float(np.hypot(half[0], half[1])))
            if spot is None:
                return
            prim = Primitive(
                "box",
                np.array([*spot, half[2]]),
                yaw_rotation(rng.uniform(0, 2 * np.pi)),
                half,
                self.new_instance(CLUTTER),
                self.material("clutter"),
            )
        else:
            r = rng.uniform(0.04, 0.12)
            spot = self.floor_spot(r)
            if spot is None:
                return
            prim = Primitive(
                "sphere",
                np.array([*spot, r]),
                np.eye(3),
                np.array([r]),
                self.new_instance(CLUTTER),
                self.material("clutter"),
            )
        self.scene.primitives.append(prim)


def sample_scene(rng: np.random.Generator, height: int, width: int, focal: float) -> Scene:
    return SceneBuilder(rng, height, width, focal).build()
