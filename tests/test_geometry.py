"""Ray casting against hand-computed intersections."""

import numpy as np
import pytest

from pag.data.synthetic.geometry import (
    Primitive,
    intersect_box,
    intersect_cylinder,
    intersect_room,
    intersect_sphere,
)
from pag.data.synthetic.scene import camera_rotation, yaw_rotation


def ray(origin, direction):
    return np.array(origin, float), np.array([direction], float)


def test_sphere_front_hit_normal_and_miss():
    o, d = ray([0, 0, -5], [0, 0, 1])
    hits = intersect_sphere(o, d, 1.0)
    assert hits.t[0] == pytest.approx(4.0)
    np.testing.assert_allclose(hits.normal[0], [0, 0, -1])
    assert np.isinf(intersect_sphere(np.array([0, 2.0, -5]), d, 1.0).t[0])


def test_unnormalised_direction_scales_t():
    o, d = ray([0, 0, -5], [0, 0, 2])
    assert intersect_sphere(o, d, 1.0).t[0] == pytest.approx(2.0)


def test_box_faces_and_inside_start():
    half = np.array([1.0, 2.0, 3.0])
    o, d = ray([-5, 0, 0], [1, 0, 0])
    hits = intersect_box(o, d, half)
    assert hits.t[0] == pytest.approx(4.0)
    np.testing.assert_allclose(hits.normal[0], [-1, 0, 0])
    np.testing.assert_allclose(hits.uv[0], [0, 0])
    o, d = ray([0.5, 10, 1], [0, -1, 0])
    hits = intersect_box(o, d, half)
    assert hits.t[0] == pytest.approx(8.0)
    np.testing.assert_allclose(hits.normal[0], [0, 1, 0])
    np.testing.assert_allclose(hits.uv[0], [0.5, 1.0])
    assert np.isinf(intersect_box(np.zeros(3), d, half).t[0])  # starting inside: no hit


def test_cylinder_side_cap_and_passing_over():
    o, d = ray([-5, 0, 0], [1, 0, 0])
    hits = intersect_cylinder(o, d, 1.0, 1.0)
    assert hits.t[0] == pytest.approx(4.0)
    np.testing.assert_allclose(hits.normal[0], [-1, 0, 0])
    o, d = ray([0.5, 0, 5], [0, 0, -1])
    hits = intersect_cylinder(o, d, 1.0, 1.0)
    assert hits.t[0] == pytest.approx(4.0)
    np.testing.assert_allclose(hits.normal[0], [0, 0, 1])
    o, d = ray([-5, 0, 1.5], [1, 0, 0])
    assert np.isinf(intersect_cylinder(o, d, 1.0, 1.0).t[0])


def test_primitive_applies_rotation_to_rays_and_normals():
    rotation = yaw_rotation(np.pi / 2)  # local x -> world y
    box = Primitive("box", np.array([0, 0, 0.0]), rotation, np.array([3.0, 1.0, 1.0]), 1, 0)
    o, d = ray([0, -10, 0], [0, 1, 0])
    hits = box.intersect(o, d)
    assert hits.t[0] == pytest.approx(7.0)  # the long local x axis now lies along world y
    np.testing.assert_allclose(hits.normal[0], [0, -1, 0], atol=1e-12)
    assert box.intersect(o, d, surface=False).normal is None


def test_room_exit_surfaces():
    dims = np.array([4.0, 5.0, 3.0])
    origin = np.array([1.0, 1.0, 1.5])
    directions = np.array([[0, 0, -1], [0, 0, 1], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0.0]])
    t, surface, normal, _ = intersect_room(origin, directions, dims)
    np.testing.assert_allclose(t, [1.5, 1.5, 1.0, 3.0, 1.0, 4.0])
    assert surface.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(normal, -directions)


def test_camera_rotation_is_proper_and_looks_along_yaw():
    r = camera_rotation(np.pi / 2, 0.0, 0.0)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 2], [0, 1, 0], atol=1e-12)  # forward = +y
    np.testing.assert_allclose(r[:, 1], [0, 0, -1], atol=1e-12)  # image down = world down
