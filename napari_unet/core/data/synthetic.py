"""Synthetic nuclei images with exact ground-truth instance labels.

The images imitate what a microscope records, so that segmentation, training and
metrics can be exercised without any real data:

* elliptical (2D) or ellipsoidal (3D) nuclei of varied size, elongation,
  orientation and brightness, each with its own chromatin-like texture;
* nuclei that touch and nuclei that overlap; where they overlap the pixel belongs
  to the nucleus drawn on top (larger nuclei are drawn first, so no nucleus is
  ever fully hidden), and every label is one 4-connected (6-connected in 3D)
  component;
* optical blur (Gaussian PSF, anisotropic along Z), out-of-focus haze, uneven
  illumination and background, Poisson (shot) noise and camera read noise.

Fluorescence images are ``uint16`` (bright nuclei on a dark background);
brightfield images are H&E-like ``uint8`` RGB (dark purple nuclei, pink
cytoplasm, light background). Labels are ``uint16`` instance images, 0 is
background. Everything is deterministic for a given ``seed``: the layout, the
textures and the noise come from independent random streams of that seed, so the
fluorescence and brightfield images of one seed show the same nuclei.

Only numpy, scipy and scikit-image are used; drawing touches each nucleus's
bounding box only (a 512x512 image with 100 nuclei takes well under a second).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential
from skimage.transform import resize

from napari_unet.core.errors import UserInputError

Kind = Literal["fluorescence", "brightfield"]
KINDS: tuple[str, ...] = ("fluorescence", "brightfield")

# Optical densities of hematoxylin and eosin per RGB channel (Ruifrok & Johnston, 2001).
_HEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN_OD = np.array([0.07, 0.99, 0.11], dtype=np.float32)

# Independent random streams derived from one seed.
_LAYOUT_STREAM, _TEXTURE_STREAM, _NOISE_STREAM, _MOTION_STREAM = range(4)
_N_STREAMS = 4

_MAX_LABEL = int(np.iinfo(np.uint16).max)


@dataclass(frozen=True)
class NucleiLayout:
    """Geometry of a set of nuclei, in pixel (voxel) units.

    Attributes
    ----------
    centers : np.ndarray
        (N, D) float64 centre coordinates, axes ``(Z,) Y, X``.
    semi_axes : np.ndarray
        (N, D) float64 semi-axes in voxels: ``(Z,)`` then the two in-plane body axes
        (major first) before the in-plane rotation.
    angles : np.ndarray
        (N,) float64 in-plane (YX) rotation in radians.
    brightness : np.ndarray
        (N,) float64 relative stain / fluorophore amount (around 1).

    """

    centers: np.ndarray
    semi_axes: np.ndarray
    angles: np.ndarray
    brightness: np.ndarray

    @property
    def n_nuclei(self) -> int:
        """Number of nuclei in the layout."""
        return int(self.centers.shape[0])

    def draw_order(self) -> np.ndarray:
        """Return indices from the largest nucleus to the smallest: later ones are drawn on top."""
        volume = np.prod(self.semi_axes, axis=1)
        return np.argsort(-volume, kind="stable")


def random_streams(seed: int, n: int = _N_STREAMS) -> list[np.random.Generator]:
    """Independent random generators derived from one integer seed.

    Parameters
    ----------
    seed : int
        Any non-negative integer.
    n : int
        Number of generators.

    Returns
    -------
    list of np.random.Generator
        Stream 0 places nuclei, 1 draws textures, 2 draws noise, 3 moves nuclei.

    """
    return [np.random.default_rng(child) for child in np.random.SeedSequence(int(seed)).spawn(n)]


# --------------------------------------------------------------------------- validation


def _check_shape(shape: Sequence[int], ndim: int, what: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 8:
        raise UserInputError(
            f"{what} shape must be {ndim} sizes of at least 8 pixels, got {shape}; "
            f"pass e.g. shape={(16, 128, 128)[-ndim:]}."
        )
    return shape


def _check_counts(n_nuclei: int, radius_range: tuple[float, float]) -> None:
    if not 0 <= int(n_nuclei) <= _MAX_LABEL:
        raise UserInputError(f"n_nuclei must be between 0 and {_MAX_LABEL}, got {n_nuclei}; pass a smaller count.")
    low, high = radius_range
    if not 1.0 <= low <= high:
        raise UserInputError(
            f"radius_range must be (low, high) with 1 <= low <= high pixels, got {radius_range}; pass e.g. (5, 15)."
        )


# --------------------------------------------------------------------------- layout


def random_layout(
    shape: Sequence[int],
    n_nuclei: int,
    seed: int = 0,
    radius_range: tuple[float, float] = (5.0, 15.0),
    spacing: Sequence[float] | None = None,
    touching_fraction: float = 0.4,
    min_separation: float = 0.65,
) -> NucleiLayout:
    """Place nuclei at random, a fraction of them against an already placed one.

    Parameters
    ----------
    shape : sequence of int
        Image shape, ``(Y, X)`` or ``(Z, Y, X)``.
    n_nuclei : int
        Nuclei wanted. Fewer are returned when the image is too crowded to place them all.
    seed : int
        Seed; the layout uses the first of :func:`random_streams`.
    radius_range : (float, float)
        Range of the mean in-plane radius in pixels.
    spacing : sequence of float, optional
        Physical voxel size per axis (e.g. ``(2, 1, 1)`` for Z steps twice the pixel size);
        nuclei are round in physical units. Defaults to isotropic.
    touching_fraction : float
        Probability that a nucleus is placed against a previous one, at a centre distance of
        0.7-1.0 times the sum of their radii, so that it touches or overlaps it.
    min_separation : float
        Centres are at least this fraction of the sum of the radii apart, so no nucleus is hidden.

    Returns
    -------
    NucleiLayout
        Coordinates in voxels of ``shape``.

    """
    shape = tuple(int(s) for s in shape)
    spacing_arr = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=np.float64)
    rng = random_streams(seed)[_LAYOUT_STREAM]
    semi_phys, angles, brightness = _random_nucleus_bodies(rng, n_nuclei, len(shape), radius_range)
    radius = np.prod(semi_phys, axis=1) ** (1.0 / len(shape))
    extent = np.asarray(shape, dtype=np.float64) * spacing_arr
    placed = _place_centers(rng, radius, semi_phys, extent, touching_fraction, min_separation)
    index = np.flatnonzero(~np.isnan(placed[:, 0]))
    return NucleiLayout(
        centers=placed[index] / spacing_arr,
        semi_axes=semi_phys[index] / spacing_arr,
        angles=angles[index],
        brightness=brightness[index],
    )


def _random_nucleus_bodies(
    rng: np.random.Generator, n: int, ndim: int, radius_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical semi-axes ((Z,) major, minor), in-plane angles and brightness of n nuclei."""
    radius = rng.uniform(radius_range[0], radius_range[1], n)
    elongation = rng.uniform(1.0, 1.6, n)
    semi = [radius * np.sqrt(elongation), radius / np.sqrt(elongation)]
    if ndim == 3:
        semi.insert(0, radius * rng.uniform(0.6, 0.9, n))  # nuclei are flattened along Z
    angles = rng.uniform(0.0, np.pi, n)
    brightness = rng.uniform(0.55, 1.45, n)
    return np.stack(semi, axis=1), angles, brightness


def _place_centers(
    rng: np.random.Generator,
    radius: np.ndarray,
    semi_phys: np.ndarray,
    extent: np.ndarray,
    touching_fraction: float,
    min_separation: float,
    max_tries: int = 60,
) -> np.ndarray:
    """(N, D) physical centres; NaN rows for nuclei that found no room."""
    n, ndim = semi_phys.shape
    centers = np.full((n, ndim), np.nan)
    for i in range(n):
        done = np.flatnonzero(~np.isnan(centers[:, 0]))
        for _ in range(max_tries):
            candidate = _candidate_center(rng, i, done, centers, radius, semi_phys, extent, touching_fraction)
            if candidate is None:
                continue
            distance = np.sqrt(((centers[done] - candidate) ** 2).sum(axis=1))
            if np.all(distance >= min_separation * (radius[done] + radius[i])):
                centers[i] = candidate
                break
    return centers


def _candidate_center(
    rng: np.random.Generator,
    i: int,
    done: np.ndarray,
    centers: np.ndarray,
    radius: np.ndarray,
    semi_phys: np.ndarray,
    extent: np.ndarray,
    touching_fraction: float,
) -> np.ndarray | None:
    """Draw a random centre, or one against a placed nucleus; None when it falls outside the image."""
    ndim = extent.size
    if done.size and rng.random() < touching_fraction:
        j = done[rng.integers(done.size)]
        direction = rng.standard_normal(ndim)
        if ndim == 3:
            direction[0] *= 0.3  # neighbours sit mostly side by side in a tissue layer
        direction /= max(np.linalg.norm(direction), 1e-9)
        candidate = centers[j] + direction * (radius[i] + radius[j]) * rng.uniform(0.7, 1.0)
    else:
        candidate = rng.uniform(0.0, 1.0, ndim) * extent
    if ndim == 3:  # keep at least half of each nucleus inside the stack
        z_half = min(semi_phys[i, 0], extent[0] / 2)
        candidate[0] = np.clip(candidate[0], z_half, extent[0] - z_half)
    if np.any(candidate < 0) or np.any(candidate >= extent):
        return None
    return candidate


# --------------------------------------------------------------------------- drawing


def _box_half_size(semi_axes: np.ndarray) -> np.ndarray:
    """Rotation-independent half size of a nucleus's bounding box, per axis."""
    half = np.full(semi_axes.size, np.ceil(semi_axes[-2:].max()) + 1, dtype=np.int64)
    if semi_axes.size == 3:
        half[0] = int(np.ceil(semi_axes[0])) + 1
    return half


def ellipse_footprint(
    center: Sequence[float], semi_axes: Sequence[float], angle: float, shape: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...], np.ndarray] | None:
    """Normalised radius of one ellipse (ellipsoid) over its bounding box.

    Parameters
    ----------
    center : sequence of float
        Centre ``((z,) y, x)`` in pixels.
    semi_axes : sequence of float
        Semi-axes ``((z,) major, minor)`` in pixels, before the in-plane rotation.
    angle : float
        In-plane rotation in radians.
    shape : sequence of int
        Shape of the image the ellipse is drawn into.

    Returns
    -------
    (image_slices, box_slices, rho) or None
        ``rho`` has the shape of the bounding box clipped to the image, with ``rho <= 1``
        inside the ellipse; ``image_slices`` place it in the image and ``box_slices`` in the
        unclipped box of size ``2 * half + 1`` (used to index per-nucleus textures).
        None when the box lies outside the image.

    """
    center = np.asarray(center, dtype=np.float64)
    semi_axes = np.asarray(semi_axes, dtype=np.float64)
    half = _box_half_size(semi_axes)
    start = np.floor(center).astype(np.int64) - half
    lo = np.maximum(start, 0)
    hi = np.minimum(start + 2 * half + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    axes = [np.arange(a, b, dtype=np.float64) - c for a, b, c in zip(lo, hi, center, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    dy, dx = grids[-2], grids[-1]
    cos, sin = np.cos(angle), np.sin(angle)
    rho2 = ((cos * dy + sin * dx) / semi_axes[-2]) ** 2 + ((cos * dx - sin * dy) / semi_axes[-1]) ** 2
    if center.size == 3:
        rho2 = rho2 + (grids[0] / semi_axes[0]) ** 2
    image_slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    box_slices = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start, strict=True))
    return image_slices, box_slices, np.sqrt(rho2).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean and unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return ((field - field.mean()) / max(field.std(), 1e-9)).astype(np.float32)


def _nucleus_textures(rng: np.random.Generator, layout: NucleiLayout) -> list[np.ndarray]:
    """Per-nucleus chromatin texture (fine granules + coarse patches), zero mean, over each box."""
    textures = []
    for semi in layout.semi_axes:
        box = tuple(int(2 * h + 1) for h in _box_half_size(semi))
        textures.append(0.6 * _smooth_noise(rng, box, 1.0) + 0.45 * _smooth_noise(rng, box, 2.5))
    return textures


def _dome_profile(rho: np.ndarray) -> np.ndarray:
    """Fluorescence: thicker, so brighter, in the middle."""
    return 1.0 - 0.35 * rho**2


def _rim_profile(rho: np.ndarray) -> np.ndarray:
    """Hematoxylin: chromatin condensed along the nuclear envelope."""
    return 0.8 + 0.35 * rho**6


def draw_nuclei(
    layout: NucleiLayout,
    shape: Sequence[int],
    textures: Sequence[np.ndarray] | None = None,
    texture_strength: float = 0.35,
    profile: Callable[[np.ndarray], np.ndarray] = _dome_profile,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the nuclei as a density map and an instance label image.

    Overlapping nuclei add up in the density (as fluorophores do), while in the labels
    the pixel belongs to the nucleus drawn last (see :meth:`NucleiLayout.draw_order`).
    Label ``i + 1`` is nucleus ``i`` of the layout.

    Parameters
    ----------
    layout : NucleiLayout
        Nuclei to draw.
    shape : sequence of int
        Output shape ``(Y, X)`` or ``(Z, Y, X)``, matching the layout's dimensions.
    textures : sequence of np.ndarray, optional
        Zero-mean texture per nucleus over its unclipped bounding box; none when omitted.
    texture_strength : float
        Relative amplitude of the texture.
    profile : callable
        Maps the normalised radius ``rho`` (0 at the centre, 1 at the edge) to a density factor.

    Returns
    -------
    density : np.ndarray
        ``shape`` float32, before blur and noise.
    labels : np.ndarray
        ``shape`` uint16; may hold split fragments until :func:`resolve_fragments` is applied.

    """
    shape = tuple(int(s) for s in shape)
    density = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    for i in layout.draw_order():
        footprint = ellipse_footprint(layout.centers[i], layout.semi_axes[i], layout.angles[i], shape)
        if footprint is None:
            continue
        image_slices, box_slices, rho = footprint
        inside = rho <= 1.0
        value = layout.brightness[i] * profile(rho)
        if textures is not None:
            value = value * np.maximum(1.0 + texture_strength * textures[i][box_slices], 0.2)
        density[image_slices] += np.where(inside, value, 0.0).astype(np.float32)
        labels[image_slices][inside] = i + 1
    return density, labels


def _expanded_window(slices: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(slices, shape, strict=True))


def _give_fragment_to_neighbour(window: np.ndarray, fragment: np.ndarray, own_label: int) -> None:
    """Relabel ``fragment`` (bool, window-shaped) to the label it borders most, else background."""
    ring = ndi.binary_dilation(fragment) & ~fragment
    neighbours = window[ring]
    neighbours = neighbours[(neighbours != 0) & (neighbours != own_label)]
    window[fragment] = np.bincount(neighbours).argmax() if neighbours.size else 0


def resolve_fragments(labels: np.ndarray, max_passes: int = 4) -> np.ndarray:
    """Make every label one connected component, in place.

    A nucleus partly covered by nuclei drawn on top of it can be cut in pieces. The
    largest piece keeps the label; the others go to the neighbour they border most
    (the nucleus that cut them off), or to background when they border none.

    Parameters
    ----------
    labels : np.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` integer instance labels, modified in place.
    max_passes : int
        Passes over all labels (one is almost always enough).

    Returns
    -------
    np.ndarray
        The same array.

    """
    for _ in range(max_passes):
        changed = False
        for index, box in enumerate(ndi.find_objects(labels)):
            if box is None:
                continue
            window = labels[_expanded_window(box, labels.shape)]
            pieces, n_pieces = ndi.label(window == index + 1)
            if n_pieces <= 1:
                continue
            largest = np.bincount(pieces.ravel())[1:].argmax() + 1
            for piece in range(1, n_pieces + 1):
                if piece != largest:
                    _give_fragment_to_neighbour(window, pieces == piece, index + 1)
            changed = True
        if not changed:
            break
    return labels


# --------------------------------------------------------------------------- image formation


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 3) -> np.ndarray:
    """Very smooth random field (zero mean, unit std) by cubic upsampling of a coarse grid."""
    coarse = rng.standard_normal(tuple(cells + 1 for _ in shape))
    field = resize(coarse, shape, order=3, mode="reflect", anti_aliasing=False)
    return ((field - field.mean()) / max(field.std(), 1e-9)).astype(np.float32)


def _illumination(rng: np.random.Generator, shape_yx: tuple[int, int], strength: float) -> np.ndarray:
    """(Y, X) multiplicative illumination: a random linear gradient, vignetting and a smooth wobble."""
    yy, xx = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape_yx), indexing="ij", sparse=True)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    gradient = 1.0 + strength * rng.uniform(0.5, 1.0) * (np.cos(theta) * yy + np.sin(theta) * xx)
    vignette = 1.0 - 0.5 * strength * (yy**2 + xx**2) / 2.0
    wobble = 1.0 + 0.25 * strength * _smooth_field(rng, shape_yx)
    return (gradient * vignette * wobble).astype(np.float32)


def _blur(density: np.ndarray, psf_sigma: float, z_sigma: float | None = None) -> np.ndarray:
    """Gaussian PSF (anisotropic in 3D) plus a faint wide out-of-focus haze."""
    sigma = (z_sigma, psf_sigma, psf_sigma) if density.ndim == 3 else psf_sigma
    sharp = ndi.gaussian_filter(density, sigma, mode="nearest")
    haze_sigma = tuple(4.0 * s for s in np.broadcast_to(sigma, (density.ndim,)))
    haze = ndi.gaussian_filter(density, haze_sigma, mode="nearest")
    return sharp + 0.08 * haze


def _camera(rng: np.random.Generator, photons: np.ndarray, read_noise: float, offset: float) -> np.ndarray:
    """Poisson shot noise + Gaussian read noise + camera offset, as uint16 counts."""
    counts = rng.poisson(np.maximum(photons, 0.0)).astype(np.float32)
    counts += offset + read_noise * rng.standard_normal(photons.shape, dtype=np.float32)
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _lighting(rng: np.random.Generator, shape_yx: tuple[int, int], background: float) -> tuple[np.ndarray, np.ndarray]:
    """(Y, X) illumination and background of one fluorescence field of view (fixed over a stack or time-lapse)."""
    return _illumination(rng, shape_yx, 0.25), _background(rng, shape_yx, background)


def _fluorescence_image(
    rng: np.random.Generator,
    density: np.ndarray,
    lighting: tuple[np.ndarray, np.ndarray],
    photons: float,
    psf_sigma: float,
    read_noise: float,
    offset: float,
    z_sigma: float | None = None,
) -> np.ndarray:
    """Record ``density`` through the microscope: blur, uneven light over a smooth background, camera noise (uint16)."""
    illumination, background = lighting
    expected = photons * _blur(density, psf_sigma, z_sigma) * illumination + background
    return _camera(rng, expected, read_noise, offset)


def _background(rng: np.random.Generator, shape_yx: tuple[int, int], level: float) -> np.ndarray:
    """(Y, X) smooth uneven background: level with a +-40 % gradient and blotches."""
    return (level * np.clip(_illumination(rng, shape_yx, 0.8), 0.3, None)).astype(np.float32)


def _brightfield_rgb(
    rng: np.random.Generator,
    hematoxylin: np.ndarray,
    labels: np.ndarray,
    psf_sigma: float,
) -> np.ndarray:
    """(Y, X, 3) uint8 H&E-like transmitted-light image (Beer-Lambert absorption)."""
    shape = labels.shape
    distance = ndi.distance_transform_edt(labels == 0)
    cytoplasm = 0.55 * np.exp(-distance / 7.0) * (0.8 + 0.2 * _smooth_noise(rng, shape, 2.0))
    stroma = 0.06 + 0.2 * np.clip(_smooth_noise(rng, shape, 3.0), 0.0, None)
    eosin = np.maximum(cytoplasm, stroma).astype(np.float32)
    density = (1.25 * hematoxylin[..., None] * _HEMATOXYLIN_OD + 0.9 * eosin[..., None] * _EOSIN_OD).astype(np.float32)
    density = ndi.gaussian_filter(density, (psf_sigma, psf_sigma, 0), mode="nearest")
    light = 242.0 * _illumination(rng, shape, 0.12)[..., None]
    rgb = light * np.exp(-density) * np.array([1.0, 0.985, 1.0], dtype=np.float32)
    rgb += np.sqrt(np.maximum(rgb, 0.0)) * 0.25 * rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb += 1.5 * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- public generators


@dataclass(frozen=True)
class _Scene:
    """What every generator draws from one seed: the nuclei, their textures and the noise / motion streams."""

    layout: NucleiLayout
    textures: list[np.ndarray]
    noise_rng: np.random.Generator
    motion_rng: np.random.Generator


def _scene(
    shape: tuple[int, ...],
    n_nuclei: int,
    seed: int,
    radius_range: tuple[float, float],
    touching_fraction: float,
    spacing: Sequence[float] | None = None,
) -> _Scene:
    """Check the counts and draw the layout and textures of ``seed`` (same seed, same scene)."""
    _check_counts(n_nuclei, radius_range)
    layout = random_layout(shape, n_nuclei, seed, radius_range, spacing, touching_fraction)
    _, texture_rng, noise_rng, motion_rng = random_streams(seed)
    return _Scene(layout, _nucleus_textures(texture_rng, layout), noise_rng, motion_rng)


def _final_labels(labels: np.ndarray) -> np.ndarray:
    """One connected component per label, numbered 1..N, uint16."""
    return relabel_sequential(resolve_fragments(labels))[0].astype(np.uint16)


def synthetic_nuclei(
    shape: Sequence[int] = (256, 256),
    n_nuclei: int = 40,
    seed: int = 0,
    kind: Kind = "fluorescence",
    radius_range: tuple[float, float] = (5.0, 15.0),
    touching_fraction: float = 0.4,
    psf_sigma: float = 1.2,
    photons: float = 400.0,
    background: float = 40.0,
    read_noise: float = 4.0,
    offset: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a 2D nuclei image with its exact instance labels.

    Parameters
    ----------
    shape : (int, int)
        ``(Y, X)`` image size.
    n_nuclei : int
        Nuclei wanted; a crowded image may hold fewer (none is hidden completely).
    seed : int
        Same seed, same arrays. Both kinds of one seed show the same nuclei.
    kind : {"fluorescence", "brightfield"}
        ``"fluorescence"``: uint16, bright nuclei on a dark background.
        ``"brightfield"``: H&E-like uint8 RGB, dark purple nuclei on a light background.
    radius_range : (float, float)
        Range of the mean nucleus radius in pixels.
    touching_fraction : float
        Share of nuclei placed against another one (touching or overlapping).
    psf_sigma : float
        Standard deviation of the Gaussian point spread function, in pixels.
    photons : float
        Fluorescence: expected photons at the centre of a nucleus of brightness 1.
    background : float
        Fluorescence: mean background photons (uneven across the image).
    read_noise : float
        Fluorescence: camera read noise standard deviation, in counts.
    offset : float
        Fluorescence: camera offset added to every pixel, in counts.

    Returns
    -------
    image : np.ndarray
        ``(Y, X)`` uint16 for fluorescence, ``(Y, X, 3)`` uint8 for brightfield.
    labels : np.ndarray
        ``(Y, X)`` uint16 instance labels ``1..N`` (0 background), one connected component each.

    """
    if kind not in KINDS:
        raise UserInputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}; pick one of those.")
    shape = _check_shape(shape, 2, "image")
    scene = _scene(shape, n_nuclei, seed, radius_range, touching_fraction)
    if kind == "fluorescence":
        density, labels = draw_nuclei(scene.layout, shape, scene.textures)
        lighting = _lighting(scene.noise_rng, shape, background)
        image = _fluorescence_image(scene.noise_rng, density, lighting, photons, psf_sigma, read_noise, offset)
    else:
        density, labels = draw_nuclei(scene.layout, shape, scene.textures, texture_strength=0.6, profile=_rim_profile)
        image = _brightfield_rgb(scene.noise_rng, density, labels, psf_sigma)
    return image, _final_labels(labels)


def synthetic_zstack(
    shape: Sequence[int] = (16, 128, 128),
    n_nuclei: int = 20,
    seed: int = 0,
    z_spacing: float = 2.0,
    radius_range: tuple[float, float] = (5.0, 15.0),
    touching_fraction: float = 0.4,
    psf_sigma: float = 1.2,
    psf_z_ratio: float = 3.0,
    attenuation: float = 0.4,
    photons: float = 400.0,
    background: float = 40.0,
    read_noise: float = 4.0,
    offset: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a fluorescence Z-stack of ellipsoidal nuclei with 3D instance labels.

    Parameters
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)`` stack size.
    n_nuclei : int
        Nuclei wanted.
    seed : int
        Same seed, same arrays.
    z_spacing : float
        Z step in units of the pixel size (napari layer ``scale=(z_spacing, 1, 1)``);
        nuclei are round in physical units, so they span ``radius / z_spacing`` planes.
    radius_range : (float, float)
        Range of the mean in-plane radius in pixels.
    touching_fraction : float
        Share of nuclei placed against another one.
    psf_sigma : float
        In-plane PSF standard deviation in pixels.
    psf_z_ratio : float
        Axial / lateral PSF width in physical units (the PSF is elongated along Z).
    attenuation : float
        Signal lost from the first to the last plane (fraction, exponential with depth).
    photons, background, read_noise, offset : float
        As in :func:`synthetic_nuclei`.

    Returns
    -------
    image : np.ndarray
        ``(Z, Y, X)`` uint16.
    labels : np.ndarray
        ``(Z, Y, X)`` uint16 3D instance labels, one 6-connected component each.

    """
    shape = _check_shape(shape, 3, "Z-stack")
    if z_spacing <= 0:
        raise UserInputError(f"z_spacing must be positive, got {z_spacing}; pass e.g. 2.0.")
    scene = _scene(shape, n_nuclei, seed, radius_range, touching_fraction, spacing=(float(z_spacing), 1.0, 1.0))
    density, labels = draw_nuclei(scene.layout, shape, scene.textures)
    depth = np.exp(np.log1p(-min(attenuation, 0.99)) * np.linspace(0.0, 1.0, shape[0]))
    density *= depth[:, None, None].astype(np.float32)
    lighting = _lighting(scene.noise_rng, shape[1:], background)
    z_sigma = psf_sigma * psf_z_ratio / z_spacing
    image = _fluorescence_image(scene.noise_rng, density, lighting, photons, psf_sigma, read_noise, offset, z_sigma)
    return image, _final_labels(labels)


def random_zstack(seed: int, shape: Sequence[int] = (32, 128, 128)) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Make a Z-stack with randomly drawn optics, anisotropy, nucleus size, crowding and noise.

    What the 3D model learns from and is tested on: every seed is a
    different "microscope and sample" (:func:`synthetic_zstack` with settings
    drawn from broad ranges), so a model trained on many seeds does not
    learn one simulator's look.

    Parameters
    ----------
    seed : int
        Same seed, same stack and settings.
    shape : (int, int, int)
        ``(Z, Y, X)`` stack size.

    Returns
    -------
    image : np.ndarray
        ``(Z, Y, X)`` uint16.
    labels : np.ndarray
        ``(Z, Y, X)`` uint16 3D instance labels.
    settings : dict
        The drawn keyword arguments of :func:`synthetic_zstack`.

    Notes
    -----
    Ranges: Z step 1-3 pixel sizes; mean in-plane radius 3.5-12 pixels (each
    stack spans x1.3-1.8 around its own); nuclei fill 10-40 % of the volume,
    20-70 % placed against a neighbour; in-plane PSF sigma 0.6-2 pixels,
    axial 2-4x wider; 0-70 % signal loss with depth; 40-1500 photons per
    nucleus voxel (log-uniform) over 10-120 background.

    """
    shape = _check_shape(shape, 3, "Z-stack")
    rng = np.random.default_rng([seed, 3])
    z_spacing = float(rng.uniform(1.0, 3.0))
    low = float(rng.uniform(3.5, 8.0))
    high = low * float(rng.uniform(1.3, 1.8))
    mean_radius = 0.5 * (low + high)
    physical_volume = shape[0] * z_spacing * shape[1] * shape[2]
    fill = float(rng.uniform(0.10, 0.40))
    n_nuclei = max(1, round(fill * physical_volume / (4.0 / 3.0 * np.pi * mean_radius**3)))
    settings = {
        "z_spacing": z_spacing,
        "radius_range": (low, high),
        "n_nuclei": n_nuclei,
        "touching_fraction": float(rng.uniform(0.2, 0.7)),
        "psf_sigma": float(rng.uniform(0.6, 2.0)),
        "psf_z_ratio": float(rng.uniform(2.0, 4.0)),
        "attenuation": float(rng.uniform(0.0, 0.7)),
        "photons": float(np.exp(rng.uniform(np.log(40.0), np.log(1500.0)))),
        "background": float(rng.uniform(10.0, 120.0)),
        "read_noise": float(rng.uniform(2.0, 8.0)),
    }
    image, labels = synthetic_zstack(shape, seed=seed, **settings)
    return image, labels, settings


def _reflect_into(centers: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mirror centres that left the image back inside it."""
    upper = np.asarray(shape, dtype=np.float64) - 1.0
    centers = np.abs(centers)
    return upper - np.abs(upper - centers)


def synthetic_timelapse(
    n_frames: int = 5,
    shape: Sequence[int] = (128, 128),
    n_nuclei: int = 20,
    seed: int = 0,
    drift: tuple[float, float] = (0.8, 1.2),
    jitter: float = 0.7,
    bleaching: float = 0.03,
    radius_range: tuple[float, float] = (5.0, 15.0),
    touching_fraction: float = 0.4,
    psf_sigma: float = 1.2,
    photons: float = 400.0,
    background: float = 40.0,
    read_noise: float = 4.0,
    offset: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a fluorescence time-lapse of drifting nuclei whose label ids persist over time.

    Each frame moves every nucleus by the common ``drift`` plus its own random step, and
    turns it slightly; its texture moves with it. Label ``k`` is the same nucleus in every
    frame (ids are not renumbered, so an id may be missing from a frame where the nucleus
    is hidden or has left the field).

    Parameters
    ----------
    n_frames : int
        Number of time points.
    shape : (int, int)
        ``(Y, X)`` frame size.
    n_nuclei : int
        Nuclei wanted.
    seed : int
        Same seed, same arrays.
    drift : (float, float)
        Common ``(dy, dx)`` displacement per frame, in pixels (stage drift / tissue flow).
    jitter : float
        Standard deviation of each nucleus's own random step per frame, in pixels.
    bleaching : float
        Fraction of signal lost per frame.
    radius_range, touching_fraction, psf_sigma, photons, background, read_noise, offset
        As in :func:`synthetic_nuclei`.

    Returns
    -------
    image : np.ndarray
        ``(T, Y, X)`` uint16.
    labels : np.ndarray
        ``(T, Y, X)`` uint16 instance labels, consistent ids across frames.

    """
    if int(n_frames) < 1:
        raise UserInputError(f"n_frames must be at least 1, got {n_frames}; pass e.g. 5.")
    shape = _check_shape(shape, 2, "frame")
    scene = _scene(shape, n_nuclei, seed, radius_range, touching_fraction)
    layout, motion_rng = scene.layout, scene.motion_rng
    lighting = _lighting(scene.noise_rng, shape, background)
    images, labels = [], []
    for t in range(int(n_frames)):
        if t > 0:
            step = np.asarray(drift) + jitter * motion_rng.standard_normal(layout.centers.shape)
            layout = replace(
                layout,
                centers=_reflect_into(layout.centers + step, shape),
                angles=layout.angles + 0.05 * motion_rng.standard_normal(layout.n_nuclei),
            )
        density, frame_labels = draw_nuclei(layout, shape, scene.textures)
        density *= (1.0 - bleaching) ** t
        images.append(_fluorescence_image(scene.noise_rng, density, lighting, photons, psf_sigma, read_noise, offset))
        labels.append(resolve_fragments(frame_labels))
    return np.stack(images), np.stack(labels)
