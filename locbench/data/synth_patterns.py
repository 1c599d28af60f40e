"""Drawing for the synthetic HPA-like fields of :mod:`locbench.data.synth`: cell layout, stains, class patterns.

A field is a few cells (elliptic Voronoi regions with a ragged edge, each with one nucleus) drawn in the four
HPA stains: blue = nucleus (textured, darker nucleoli), red = microtubules (curvy fibres from the nucleus to the
cell edge), yellow = endoplasmic reticulum (a reticular net, dense around the nucleus) and green = the protein,
whose pattern in each cell follows that cell's classes. Class name → green pattern:

=================================  ==============================================================================
Nucleoplasm                        the nucleus filled, textured, dimmer in the nucleoli
Nuclear membrane                   a thin ring on the nucleus rim
Nucleoli                           1-4 medium solid blobs in the nucleus (the dark holes of the blue stain)
Nucleoli fibrillar center          clusters of 2-6 tiny dots inside each nucleolus
Nuclear speckles                   12-25 irregular small spots over a faint nucleoplasm, avoiding nucleoli
Nuclear bodies                     2-6 small, bright, round dots in the nucleus, no diffuse signal
Endoplasmic reticulum              the yellow (ER) net itself
Golgi apparatus                    a compact perinuclear cluster of short arcs and dots on one side of the nucleus
Peroxisomes                        many tiny, even, dim dots all over the cytoplasm
Endosomes                          small clusters of 2-4 dots in the middle of the cytoplasm
Lysosomes                          medium dots crowded around the nucleus
Intermediate filaments             long wavy fibres running around the nucleus (a cage, tangential)
Actin filaments                    straight parallel stress fibres across the cell, plus a faint cortical rim
Focal adhesion sites               short radial dashes at the cell periphery
Microtubules                       the red (microtubule) fibres themselves
Microtubule ends                   short tapered comets pointing outwards, all over the cytoplasm
Cytokinetic bridge                 a bright line and midbody between two daughter nuclei (cell drawn in telophase)
Mitotic spindle                    a bipolar spindle around condensed chromatin (cell drawn in metaphase)
Microtubule organizing center      a bright dot with a diffuse halo and short rays beside the nucleus
Centrosome                         one or two sharp dots beside the nucleus
Lipid droplets                     a few hollow rings in the cytoplasm
Plasma membrane                    a thin ring on the cell edge
Cell junctions                     the cell edge where it touches another cell only
Mitochondria                       many short curvy threads, denser near the nucleus
Aggresome                          one large bright blob beside the nucleus
Cytosol                            the cytoplasm filled, fading towards the cell edge
Cytoplasmic bodies                 1-4 large bright dots in the cytoplasm
Rods & rings                       1-4 short thick rods or small rings in the cytoplasm
Vesicles and punctate cytosolic…   30-60 puncta of mixed size all over the cytoplasm
Negative                           no signal
=================================  ==============================================================================

Everything is vectorised numpy/scipy: dots and fibres are point sets splatted onto canvases that are blurred
once per dot size; region patterns are full-field maps multiplied by a per-cell amplitude looked up through the
label image. No per-pixel Python loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

#: Classes whose cells are drawn dividing, and in which stage.
DIVIDING_STAGE = {"Mitotic spindle": "metaphase", "Cytokinetic bridge": "telophase"}

#: Fraction of the field area the cells cover on average (the rest is background between cells).
_FILL = 0.8


@dataclass
class Cell:
    """One cell's frame: where it is, how big, which way it points, its stage."""

    cy: float
    cx: float
    radius: float
    angle: float
    ny: float = 0.0
    nx: float = 0.0
    nradius: float = 0.0
    side: float = 0.0  # direction (radians) from the nucleus towards the Golgi / centrosome
    stage: str = "interphase"  # interphase | metaphase | telophase
    nucleoli: list[tuple[float, float, float]] = field(default_factory=list)  # (y, x, radius)


@dataclass
class Geometry:
    """The cell layout of one field and the distance maps the patterns are drawn from."""

    size: int
    labels: np.ndarray  # (S, S) int32, 0 background, 1..N cells
    nucleus: np.ndarray  # (S, S) bool
    cells: list[Cell]
    d_edge: np.ndarray  # distance to the own cell's edge (0 on the edge pixel), inside cells
    d_in_nuc: np.ndarray  # distance to the nucleus edge, inside nuclei
    d_out_nuc: np.ndarray  # distance to the nearest nucleus, outside nuclei
    rho: np.ndarray  # 0 at the nucleus edge .. 1 at the cell edge, in the cytoplasm
    nucleoli: np.ndarray  # (S, S) float32 soft mask of the nucleoli
    _pixels: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.cells)

    def pixels(self, i: int, nucleus: bool) -> np.ndarray:
        """Flat indices of cell ``i``'s (1-based) nucleus or cytoplasm pixels."""
        if not self._pixels:
            key = self.labels.ravel().astype(np.int64) * 2 + self.nucleus.ravel()
            order = np.argsort(key, kind="stable")
            bounds = np.cumsum(np.bincount(key, minlength=2 * self.n + 2))
            for j in range(1, self.n + 1):
                for nuc in (False, True):
                    k = 2 * j + nuc
                    self._pixels[(j, nuc)] = order[bounds[k - 1] : bounds[k]]
        return self._pixels[(i, nucleus)]

    def cell_of(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Label under each (sub-pixel) point; 0 off the field."""
        yi, xi = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
        ok = (yi >= 0) & (yi < self.size) & (xi >= 0) & (xi < self.size)
        out = np.zeros(ys.shape, np.int32)
        out[ok] = self.labels[yi[ok], xi[ok]]
        return out

    def in_nucleus(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        yi = np.clip(np.rint(ys).astype(np.int64), 0, self.size - 1)
        xi = np.clip(np.rint(xs).astype(np.int64), 0, self.size - 1)
        return self.nucleus[yi, xi]


# ---------------------------------------------------------------------------------------------------------------
# Layout


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return n / max(float(n.std()), 1e-6)


def _elliptic_distance(yy, xx, cy, cx, a, b, angle, wobble):
    """Distance from (cy, cx) in units of an ellipse (semi-axes a, b) whose radius wobbles with the angle.

    Computed only in the bounding box the shape can reach (10 elsewhere): the cost is per cell, not per field.
    """
    out = np.full(yy.shape, 10.0, np.float32)
    reach = 1.7 * max(a, b)  # wobble (<= 1.31) and ragged edge included
    y0, y1 = max(0, int(cy - reach)), min(yy.shape[0], int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(yy.shape[1], int(cx + reach) + 2)
    if y0 >= y1 or x0 >= x1:
        return out
    dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
    c, s = math.cos(angle), math.sin(angle)
    z = (dx * c + dy * s) / a + 1j * ((-dx * s + dy * c) / b)
    r = np.abs(z)
    unit = z / np.maximum(r, 1e-6)  # e^{i theta}; cos(k theta + ph) = Re(e^{i ph} unit^k)
    shape = 1.0 + sum(amp * (np.exp(1j * ph) * unit**k).real for k, amp, ph in wobble)
    out[y0:y1, x0:x1] = r / shape
    return out


def _wobble(rng: np.random.Generator, scale: float) -> list[tuple[int, float, float]]:
    return [(k, scale * rng.uniform(0.3, 1.0) / k, rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4, 6)]


def _place_centres(rng: np.random.Generator, size: int, radii: np.ndarray) -> np.ndarray:
    """Centres far enough apart that every cell keeps room for its nucleus; relax the spacing if crowded."""
    centres: list[np.ndarray] = []
    spacing, fails = 1.0, 0
    lo, hi = 0.06 * size, 0.94 * size
    while len(centres) < len(radii):
        p = rng.uniform(lo, hi, 2)
        r = radii[len(centres)]
        if all(np.hypot(*(p - q)) > spacing * (r + radii[j]) * 0.8 for j, q in enumerate(centres)):
            centres.append(p)
            fails = 0
        else:
            fails += 1
            if fails > 60:  # crowded field: accept tighter packing rather than fewer cells
                spacing *= 0.93
                fails = 0
    return np.array(centres).reshape(-1, 2)


def make_geometry(rng: np.random.Generator, *, size: int, n_cells: int) -> Geometry:
    """Lay out ``n_cells`` interphase cells on a ``size``-pixel field (cells cut by the border are kept).

    Args:
        rng: the field's geometry random stream.
        size: field side in pixels.
        n_cells: cells to place; a cell left with too small a nucleus or cytoplasm is dropped.

    Returns:
        The layout; dividing stages are set afterwards by :func:`set_stages`.
    """
    r0 = math.sqrt(_FILL * size * size / (math.pi * n_cells))
    radii = r0 * rng.uniform(0.85, 1.15, n_cells)
    centres = _place_centres(rng, size, radii)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ragged = 0.06 * _smooth_noise(rng, size, max(2.0, r0 / 6))
    cells, dist = [], []
    for (cy, cx), r in zip(centres, radii, strict=True):
        elong = rng.uniform(1.0, 1.9)
        cell = Cell(cy=float(cy), cx=float(cx), radius=float(r), angle=float(rng.uniform(0, math.pi)))
        a, b = r * math.sqrt(elong), r / math.sqrt(elong)
        dist.append(_elliptic_distance(yy, xx, cy, cx, a, b, cell.angle, _wobble(rng, 0.25)) + ragged)
        cells.append(cell)
    dist = np.stack(dist)
    labels = (np.argmin(dist, axis=0) + 1).astype(np.int32)
    labels[dist.min(axis=0) >= 1.0] = 0
    d_edge = _edge_distance(labels)
    nucleus = np.zeros((size, size), bool)
    for i, cell in enumerate(cells, start=1):
        e = rng.uniform(1.0, 1.5)
        cell.nradius = cell.radius * rng.uniform(0.36, 0.46)
        off = rng.uniform(0, 0.15 * cell.radius)
        phi = rng.uniform(0, 2 * math.pi)
        cell.ny, cell.nx = cell.cy + off * math.sin(phi), cell.cx + off * math.cos(phi)
        a, b = cell.nradius * math.sqrt(e), cell.nradius / math.sqrt(e)
        d = _elliptic_distance(yy, xx, cell.ny, cell.nx, a, b, cell.angle + rng.normal(0, 0.3), _wobble(rng, 0.1))
        nucleus |= (d < 1.0) & (labels == i) & (d_edge >= max(2.0, 0.12 * cell.radius))
    # Drop cells cut down to a sliver by the border or their neighbours, then renumber 1..N.
    keep = [
        i
        for i in range(1, len(cells) + 1)
        if (nucleus & (labels == i)).sum() >= 0.25 * math.pi * cells[i - 1].nradius ** 2
        and ((labels == i) & ~nucleus).sum() >= 2 * math.pi * cells[i - 1].nradius
    ]
    lut = np.zeros(len(cells) + 1, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1)
    labels = lut[labels]
    nucleus &= labels > 0
    cells = [cells[i - 1] for i in keep]
    geom = _finish(rng, size, labels, nucleus, cells, d_edge)
    for i, cell in enumerate(geom.cells, start=1):
        cy, cx = _centroid(geom, i, nucleus=False)
        towards = math.atan2(cy - cell.ny, cx - cell.nx)
        far = math.hypot(cy - cell.ny, cx - cell.nx) > 0.1 * cell.radius
        cell.side = towards if far else float(rng.uniform(-math.pi, math.pi))
        cell.nucleoli = _nucleoli_sites(rng, geom, i)
    _update_nucleoli(geom)
    return geom


def _centroid(geom: Geometry, i: int, *, nucleus: bool) -> tuple[float, float]:
    idx = geom.pixels(i, nucleus)
    if idx.size == 0:
        return geom.cells[i - 1].ny, geom.cells[i - 1].nx
    return float((idx // geom.size).mean()), float((idx % geom.size).mean())


def _edge_distance(labels: np.ndarray) -> np.ndarray:
    """Distance to the own cell's edge: a pixel whose 4-neighbour has another label (or background) is an edge."""
    p = np.pad(labels, 1, mode="edge")  # the field border is not a cell edge: the cell goes on beyond it
    inner = (labels > 0) & (p[:-2, 1:-1] == labels) & (p[2:, 1:-1] == labels)
    inner &= (p[1:-1, :-2] == labels) & (p[1:-1, 2:] == labels)
    return ndi.distance_transform_edt(inner).astype(np.float32)


def _finish(rng, size, labels, nucleus, cells, d_edge) -> Geometry:
    d_in = ndi.distance_transform_edt(nucleus).astype(np.float32)
    d_out = ndi.distance_transform_edt(~nucleus).astype(np.float32)
    cyto = (labels > 0) & ~nucleus
    rho = np.where(cyto, d_out / np.maximum(d_out + d_edge, 1e-3), 0).astype(np.float32)
    return Geometry(size, labels, nucleus, cells, d_edge, d_in, d_out, rho, np.zeros((size, size), np.float32))


def _nucleoli_sites(rng: np.random.Generator, geom: Geometry, i: int) -> list[tuple[float, float, float]]:
    cell = geom.cells[i - 1]
    idx = geom.pixels(i, nucleus=True)
    sites = []
    for _ in range(int(rng.integers(1, 5))):
        r = max(1.6, cell.nradius * rng.uniform(0.13, 0.22))
        ok = idx[geom.d_in_nuc.ravel()[idx] > r + 1]
        ok = ok if ok.size else idx
        if ok.size == 0:
            break
        k = int(ok[rng.integers(ok.size)])
        sites.append((float(k // geom.size), float(k % geom.size), float(r)))
    return sites


def _update_nucleoli(geom: Geometry) -> None:
    m = np.zeros_like(geom.nucleoli)
    for cell in geom.cells:
        for y, x, r in cell.nucleoli:  # a handful of sites per field, each drawn in its own window
            s = 0.8 * r
            y0, y1 = max(0, int(y - 4 * s)), min(geom.size, int(y + 4 * s) + 2)
            x0, x1 = max(0, int(x - 4 * s)), min(geom.size, int(x + 4 * s) + 2)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            blob = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s)).astype(np.float32)
            m[y0:y1, x0:x1] = np.maximum(m[y0:y1, x0:x1], blob)
    geom.nucleoli = m * geom.nucleus


def set_stages(rng: np.random.Generator, geom: Geometry, stages: list[str]) -> None:
    """Redraw the nuclei of dividing cells: metaphase = a condensed plate, telophase = two daughter nuclei."""
    if all(s == "interphase" for s in stages):
        return
    yy, xx = np.mgrid[0 : geom.size, 0 : geom.size].astype(np.float32)
    nucleus = geom.nucleus.copy()
    for i, (cell, stage) in enumerate(zip(geom.cells, stages, strict=True), start=1):
        cell.stage = stage
        if stage == "interphase":
            continue
        own = geom.labels == i
        nucleus[own] = False
        rn, ax = cell.nradius, cell.angle
        if stage == "metaphase":  # chromosomes in a plate across the spindle axis
            d = _elliptic_distance(yy, xx, cell.ny, cell.nx, 0.85 * rn, 0.28 * rn, ax + math.pi / 2, _wobble(rng, 0.1))
        else:  # two small daughter nuclei along the axis
            dy, dx = 0.95 * rn * math.sin(ax), 0.95 * rn * math.cos(ax)
            d = np.minimum(
                _elliptic_distance(yy, xx, cell.ny + dy, cell.nx + dx, 0.5 * rn, 0.42 * rn, ax, _wobble(rng, 0.1)),
                _elliptic_distance(yy, xx, cell.ny - dy, cell.nx - dx, 0.5 * rn, 0.42 * rn, ax, _wobble(rng, 0.1)),
            )
        nucleus |= (d < 1.0) & own & (geom.d_edge >= 1.5)
    new = _finish(rng, geom.size, geom.labels, nucleus, geom.cells, geom.d_edge)
    geom.__dict__.update(new.__dict__)
    for i, cell in enumerate(geom.cells, start=1):
        if cell.stage != "interphase":
            cell.nucleoli = _nucleoli_sites(rng, geom, i)
    _update_nucleoli(geom)


# ---------------------------------------------------------------------------------------------------------------
# Canvases: points splatted bilinearly, blurred once per dot size; region maps weighted per cell.


class Canvas:
    """Accumulates dots and fibres (as dense point sets) and full-field region maps for one stain."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buckets: dict[float, np.ndarray] = {}
        self.regions = np.zeros((size, size), np.float32)

    def points(self, ys: np.ndarray, xs: np.ndarray, amp: np.ndarray | float, sigma: float) -> None:
        """Add Gaussian dots of peak ``amp`` and width ``sigma`` (pixels) at sub-pixel positions."""
        sigma = 0.6 * 1.25 ** round(math.log(max(sigma, 0.6) / 0.6, 1.25))  # few buckets → few blurs
        # The bilinear splat adds a variance of 1/6 px² per axis: scale so that the peak stays ``amp``.
        w = np.broadcast_to(np.asarray(amp, np.float64), np.shape(ys)) * (2 * math.pi * (sigma * sigma + 1 / 6))
        self._splat(np.asarray(ys, np.float64).ravel(), np.asarray(xs, np.float64).ravel(), w.ravel(), sigma)

    def curves(self, ys: np.ndarray, xs: np.ndarray, amp: np.ndarray | float, sigma: float, ds: float) -> None:
        """Add lines of peak ``amp``: ``ys``/``xs`` sample the curves every ``ds`` pixels."""
        sigma = max(sigma, 0.6)
        self.points(ys, xs, np.asarray(amp) * ds / (math.sqrt(2 * math.pi * (sigma * sigma + 1 / 6))), sigma)

    def _splat(self, ys, xs, w, sigma) -> None:
        s = self.size
        y0, x0 = np.floor(ys), np.floor(xs)
        fy, fx = ys - y0, xs - x0
        y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
        acc = self.buckets.setdefault(sigma, np.zeros(s * s, np.float64))
        for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            yi, xi = y0 + dy, x0 + dx
            ok = (yi >= 0) & (yi < s) & (xi >= 0) & (xi < s)
            acc += np.bincount(yi[ok] * s + xi[ok], weights=(w * wt)[ok], minlength=s * s)

    def render(self) -> np.ndarray:
        out = self.regions.copy()
        for sigma, acc in sorted(self.buckets.items()):
            out += ndi.gaussian_filter(acc.reshape(self.size, self.size), sigma, mode="constant").astype(np.float32)
        return out


def sample_positions(
    rng: np.random.Generator, geom: Geometry, idx: np.ndarray, n: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sub-pixel positions drawn from the pixels ``idx`` (flat), with probability ∝ ``weights``."""
    if idx.size == 0 or n <= 0:
        return np.zeros(0), np.zeros(0)
    p = None
    if weights is not None and weights.sum() > 0:
        p = weights / weights.sum()
    k = rng.choice(idx, size=n, p=p)
    return k // geom.size + rng.uniform(-0.5, 0.5, n), k % geom.size + rng.uniform(-0.5, 0.5, n)


def walk(
    rng: np.random.Generator, y0: np.ndarray, x0: np.ndarray, theta0: np.ndarray, steps: int, ds: float, curl: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fibres as random walks: (K, steps) point arrays, each fibre turning by N(0, curl) radians per step."""
    theta = theta0[:, None] + np.cumsum(rng.normal(0, curl, (len(y0), steps)), axis=1)
    ys = y0[:, None] + np.cumsum(ds * np.sin(theta), axis=1)
    xs = x0[:, None] + np.cumsum(ds * np.cos(theta), axis=1)
    return ys, xs


def clip_fibres(geom: Geometry, ys, xs, i: int, *, cytoplasm: bool = True, stop: bool = True):
    """Keep fibre points inside cell ``i`` (its cytoplasm); with ``stop`` a fibre ends where it first leaves."""
    inside = geom.cell_of(ys, xs) == i
    if cytoplasm:
        inside &= ~geom.in_nucleus(ys, xs)
    if stop:
        inside = np.cumprod(inside, axis=1).astype(bool)
    return ys[inside], xs[inside]


def beside_nucleus(geom: Geometry, i: int, angle: float, gap: float) -> tuple[float, float]:
    """The point ``gap`` pixels outside the nucleus edge of cell ``i`` in direction ``angle``."""
    cell = geom.cells[i - 1]
    t = np.arange(0, 3 * cell.radius, 0.5)
    ys, xs = cell.ny + t * math.sin(angle), cell.nx + t * math.cos(angle)
    out = np.flatnonzero(~geom.in_nucleus(ys, xs))
    r = t[out[0]] if out.size else cell.nradius
    # Do not step beyond the cell: fall back towards the nucleus when the cytoplasm is thin on that side.
    for g in (gap, gap / 2, 0.5):
        y, x = cell.ny + (r + g) * math.sin(angle), cell.nx + (r + g) * math.cos(angle)
        if geom.cell_of(np.array([y]), np.array([x]))[0] == i:
            return y, x
    return y, x


# ---------------------------------------------------------------------------------------------------------------
# Painting a field


class Painter:
    """Draws one field: the three reference stains for every cell and the green pattern of each cell's classes."""

    def __init__(self, rng: np.random.Generator, geom: Geometry) -> None:
        self.rng, self.geom = rng, geom
        self.green = Canvas(geom.size)
        self.cyto = Canvas(geom.size)  # cytoplasmic objects: trimmed to the cytoplasm where they spill over
        self.region_amp: dict[str, np.ndarray] = {}
        self._fields: dict[str, np.ndarray] = {}

    def region(self, name: str, i: int, amp: float) -> None:
        """Add ``amp`` × the full-field map ``name`` over cell ``i``."""
        self.region_amp.setdefault(name, np.zeros(self.geom.n + 1, np.float32))[i] += amp

    def field(self, name: str) -> np.ndarray:
        if name not in self._fields:
            self._fields[name] = getattr(self, f"_field_{name}")().astype(np.float32)
        return self._fields[name]

    # Full-field maps (computed once per field, only when some cell needs them) -----------------------------

    def _field_nuc_soft(self):
        return ndi.gaussian_filter(self.geom.nucleus.astype(np.float32), 0.7)

    def _field_cyto_soft(self):
        g = self.geom
        return ndi.gaussian_filter(((g.labels > 0) & ~g.nucleus).astype(np.float32), 0.7) * (g.labels > 0)

    def _field_texture(self):
        return _smooth_noise(self.rng, self.geom.size, max(0.7, self.geom.size / 300))

    def _field_nucleoplasm(self):
        tex = np.clip(0.8 + 0.2 * self.field("texture"), 0, None)
        return self.field("nuc_soft") * tex * (1 - 0.8 * self.geom.nucleoli)

    def _field_nuclear_rim(self):
        g = self.geom
        d = np.where(g.nucleus, g.d_in_nuc - 0.5, g.d_out_nuc - 0.5)
        return np.exp(-(d**2) / (2 * 0.9**2)) * (g.labels > 0)

    def _field_cell_rim(self):
        g = self.geom
        return np.exp(-(g.d_edge**2) / (2 * 0.9**2)) * (g.labels > 0)

    def _field_cytosol(self):
        coarse = ndi.gaussian_filter(self.field("texture"), 2.0)
        return self.field("cyto_soft") * (1 - 0.45 * self.geom.rho) * np.clip(0.85 + 0.4 * coarse, 0, None)

    def _field_er(self):
        g = self.geom
        s = max(0.8, g.size / 200)
        w = self.rng.standard_normal((g.size, g.size)).astype(np.float32)
        band = ndi.gaussian_filter(w, s) - ndi.gaussian_filter(w, 2.5 * s)
        net = np.exp(-((band / (0.35 * band.std())) ** 2))  # zero crossings of band-pass noise: a reticular net
        net = ndi.gaussian_filter(net, 0.5)
        density = 0.3 + 0.7 * np.exp(-g.rho / 0.3)  # perinuclear-dense
        rim = np.exp(-(g.d_out_nuc**2) / (2 * 1.2**2)) * ~g.nucleus  # ER is continuous with the nuclear envelope
        return self.field("cyto_soft") * density * (0.2 + 0.8 * net) + 0.5 * rim * (g.labels > 0)

    def _field_microtubules(self):
        return self.field("mt_fibres") + 0.12 * self.field("cyto_soft")

    def _field_mt_fibres(self):
        red = Canvas(self.geom.size)
        for i, cell in enumerate(self.geom.cells, start=1):
            if cell.stage == "metaphase":
                ys, xs = _spindle(self, i)
                red.curves(ys, xs, 0.9, 0.6, 0.5)
            else:
                self._interphase_microtubules(red, i, 0.6 if cell.stage == "telophase" else 1.0)
                if cell.stage == "telophase":
                    ys, xs = _bridge(self, i)
                    red.curves(ys, xs, 1.0, 0.7, 0.5)
        return 1 - np.exp(-1.2 * red.render())  # saturate where fibres pile up around the nucleus

    def _interphase_microtubules(self, canvas: Canvas, i: int, amp: float) -> None:
        g, rng, cell = self.geom, self.rng, self.geom.cells[i - 1]
        cyto = g.pixels(i, nucleus=False)
        k = int(1.3 * cell.radius) + 10
        near = cyto[g.d_out_nuc.ravel()[cyto] < 1.6]
        y0, x0 = sample_positions(rng, g, near if near.size else cyto, int(0.65 * k))
        radial = np.arctan2(y0 - cell.ny, x0 - cell.nx) + rng.normal(0, 0.35, y0.size)
        y1, x1 = sample_positions(rng, g, cyto, k - y0.size)
        theta = np.concatenate([radial, rng.uniform(-math.pi, math.pi, y1.size)])
        ys, xs = walk(
            rng, np.concatenate([y0, y1]), np.concatenate([x0, x1]), theta, int(2 * cell.radius / 0.6), 0.6, 0.08
        )
        a = np.broadcast_to(rng.uniform(0.25, 0.8, (len(theta), 1)), ys.shape)
        inside = np.cumprod((g.cell_of(ys, xs) == i) & ~g.in_nucleus(ys, xs), axis=1).astype(bool)
        canvas.curves(ys[inside], xs[inside], amp * a[inside], 0.6, 0.6)

    # Stains ----------------------------------------------------------------------------------------------------

    def stains(self, spread: float) -> dict[str, np.ndarray]:
        """Blue, red and yellow of every cell, each cell with its own brightness (log-normal, ``spread``)."""
        g, rng = self.geom, self.rng
        out = {}
        for stain in ("blue", "red", "yellow"):
            amp = np.exp(rng.normal(0, spread / 2, g.n + 1)).astype(np.float32)
            if stain == "blue":
                amp[1:] *= [1.4 if c.stage != "interphase" else 1.0 for c in g.cells]  # condensed chromatin
                tex = np.clip(0.72 + 0.28 * self.field("texture"), 0, None)
                base = self.field("nuc_soft") * tex * (1 - 0.55 * g.nucleoli)
            elif stain == "red":
                base = self.field("mt_fibres") + 0.2 * self.field("cyto_soft")
            else:
                base = self.field("er")
            out[stain] = base * amp[g.labels]
        return out

    def render_green(self) -> np.ndarray:
        for name, table in self.region_amp.items():
            self.green.regions += self.field(name) * table[self.geom.labels]
        return self.green.render() + self.cyto.render() * self.field("cyto_soft")


def _cyto_positions(p: Painter, i: int, n: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    idx = p.geom.pixels(i, nucleus=False)
    w = None if weights is None else weights.ravel()[idx]
    return sample_positions(p.rng, p.geom, idx, n, w)


def _nuc_positions(p: Painter, i: int, n: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    idx = p.geom.pixels(i, nucleus=True)
    w = None if weights is None else weights.ravel()[idx]
    return sample_positions(p.rng, p.geom, idx, n, w)


def _radial(cell: Cell, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.arctan2(ys - cell.ny, xs - cell.nx)


def _dashes(ys, xs, theta, length: float, ds: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Straight dashes starting at each point along ``theta``; also returns t ∈ [0, 1] along each dash."""
    t = np.arange(0, length, ds) / max(length, 1e-6)
    return (
        ys[:, None] + t * length * np.sin(theta)[:, None],
        xs[:, None] + t * length * np.cos(theta)[:, None],
        np.broadcast_to(t, (len(ys), len(t))),
    )


def _rings(ys, xs, radii, ds: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    n = max(8, int(2 * math.pi * max(radii.max(initial=1), 1) / ds))
    phi = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return ys[:, None] + radii[:, None] * np.sin(phi), xs[:, None] + radii[:, None] * np.cos(phi)


def _spindle(p: Painter, i: int) -> tuple[np.ndarray, np.ndarray]:
    """A lens of curved fibres between two poles on the cell axis (metaphase) or between the daughters."""
    cell = p.geom.cells[i - 1]
    rn, ax = cell.nradius, cell.angle
    half, width = (0.95 * rn, 0.55 * rn) if cell.stage != "telophase" else (0.7 * rn, 0.35 * rn)
    uy, ux = math.sin(ax), math.cos(ax)
    offs = (
        np.linspace(-width, width, 15) + p.rng.normal(0, 0.05 * rn, 15)
    ) * 2  # a quadratic Bezier bulges half its control offset
    t = np.linspace(0, 1, max(8, int(2 * half / 0.5)))[None, :]
    along = (2 * t - 1) * half
    bulge = 2 * t * (1 - t) * offs[:, None]
    return cell.ny + along * uy + bulge * ux, cell.nx + along * ux - bulge * uy


def _bridge(p: Painter, i: int) -> tuple[np.ndarray, np.ndarray]:
    cell = p.geom.cells[i - 1]
    t = np.arange(-0.45, 0.45, 0.5 / cell.nradius) * cell.nradius
    return cell.ny + t * math.sin(cell.angle), cell.nx + t * math.cos(cell.angle)


# ---------------------------------------------------------------------------------------------------------------
# Class patterns: f(painter, cell index (1-based), amplitude) adds that class's green signal to the cell.


def _nucleoplasm(p: Painter, i: int, a: float) -> None:
    p.region("nucleoplasm", i, a)


def _nuclear_membrane(p: Painter, i: int, a: float) -> None:
    p.region("nuclear_rim", i, a)


def _nucleoli(p: Painter, i: int, a: float) -> None:
    for y, x, r in p.geom.cells[i - 1].nucleoli:
        ys, xs = y + p.rng.normal(0, 0.3 * r, 3), x + p.rng.normal(0, 0.3 * r, 3)
        p.green.points(ys, xs, 0.55 * a, 0.65 * r)


def _fibrillar_center(p: Painter, i: int, a: float) -> None:
    for y, x, r in p.geom.cells[i - 1].nucleoli:
        n = int(p.rng.integers(2, 7))
        p.green.points(y + p.rng.normal(0, 0.4 * r, n), x + p.rng.normal(0, 0.4 * r, n), a, 0.6)


def _speckles(p: Painter, i: int, a: float) -> None:
    rn = p.geom.cells[i - 1].nradius
    ys, xs = _nuc_positions(p, i, int(p.rng.integers(12, 26)), 1 - p.geom.nucleoli)
    for _ in range(2):  # two offset sub-dots per speckle make it irregular
        p.green.points(
            ys + p.rng.normal(0, 0.04 * rn, ys.size),
            xs + p.rng.normal(0, 0.04 * rn, ys.size),
            0.6 * a * p.rng.uniform(0.6, 1, ys.size),
            0.07 * rn,
        )
    p.region("nucleoplasm", i, 0.2 * a)


def _nuclear_bodies(p: Painter, i: int, a: float) -> None:
    ys, xs = _nuc_positions(p, i, int(p.rng.integers(2, 7)), (p.geom.d_in_nuc > 1.5) * (1 - p.geom.nucleoli))
    p.green.points(ys, xs, a, 0.05 * p.geom.cells[i - 1].nradius)


def _er(p: Painter, i: int, a: float) -> None:
    p.region("er", i, a)


def _golgi(p: Painter, i: int, a: float) -> None:
    g, rng, cell = p.geom, p.rng, p.geom.cells[i - 1]
    rn = cell.nradius
    cy, cx = beside_nucleus(g, i, cell.side, 0.15 * rn)
    tan = cell.side + math.pi / 2
    n = int(rng.integers(6, 13))
    along, out = rng.normal(0, 0.3 * rn, n), np.abs(rng.normal(0, 0.12 * rn, n))
    y0 = cy + along * math.sin(tan) + out * math.sin(cell.side)
    x0 = cx + along * math.cos(tan) + out * math.cos(cell.side)
    ys, xs = walk(
        rng, y0, x0, tan + rng.normal(0, 0.3, n) + math.pi * rng.integers(0, 2, n), int(0.3 * rn / 0.5), 0.5, 0.15
    )
    ys, xs = clip_fibres(g, ys, xs, i, stop=False)
    p.cyto.curves(ys, xs, 0.8 * a, 0.6, 0.5)
    p.cyto.points(y0, x0, 0.8 * a, 0.07 * rn)


def _centrosome(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    cy, cx = beside_nucleus(p.geom, i, cell.side, 0.15 * cell.nradius)
    n = int(p.rng.integers(1, 3))
    d = max(1.6, 0.1 * cell.nradius) * (np.arange(n) - (n - 1) / 2)
    phi = p.rng.uniform(0, math.pi)
    p.cyto.points(cy + d * math.sin(phi), cx + d * math.cos(phi), a, max(0.6, 0.04 * cell.nradius))


def _mtoc(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    rn = cell.nradius
    cy, cx = beside_nucleus(p.geom, i, cell.side, 0.2 * rn)
    p.cyto.points(np.array([cy]), np.array([cx]), 0.35 * a, 0.25 * rn)
    p.cyto.points(np.array([cy]), np.array([cx]), a, max(0.8, 0.06 * rn))
    theta = p.rng.uniform(0, 2 * math.pi, 12)
    ys, xs, t = _dashes(np.full(12, cy), np.full(12, cx), theta, 0.4 * rn)
    p.cyto.curves(ys, xs, 0.4 * a * (1 - t), 0.6, 0.5)


def _aggresome(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    rn = cell.nradius
    cy, cx = beside_nucleus(p.geom, i, cell.side + p.rng.uniform(-0.8, 0.8), 0.35 * rn)
    p.cyto.points(cy + p.rng.normal(0, 0.06 * rn, 3), cx + p.rng.normal(0, 0.06 * rn, 3), 0.5 * a, 0.2 * rn)


def _dots(p: Painter, i: int, a: float, n: tuple[int, int], sigma: float, weights=None, amp=(0.6, 1.0)) -> None:
    ys, xs = _cyto_positions(p, i, int(p.rng.integers(*n)), weights)
    p.cyto.points(ys, xs, a * p.rng.uniform(*amp, ys.size), sigma * p.geom.cells[i - 1].nradius)


def _vesicles(p: Painter, i: int, a: float) -> None:
    for s in (0.04, 0.06, 0.09):  # mixed sizes
        _dots(p, i, a, (10, 21), s, amp=(0.5, 1.0))


def _peroxisomes(p: Painter, i: int, a: float) -> None:
    _dots(p, i, a, (60, 111), 0.04, amp=(0.5, 0.6))


def _endosomes(p: Painter, i: int, a: float) -> None:
    rn = p.geom.cells[i - 1].nradius
    ys, xs = _cyto_positions(p, i, int(p.rng.integers(8, 16)), np.exp(-(((p.geom.rho - 0.5) / 0.25) ** 2)))
    k = p.rng.integers(2, 5, ys.size)
    ys, xs = np.repeat(ys, k), np.repeat(xs, k)
    ys, xs = ys + p.rng.normal(0, 0.09 * rn, ys.size), xs + p.rng.normal(0, 0.09 * rn, ys.size)
    p.cyto.points(ys, xs, 0.8 * a, 0.055 * rn)


def _lysosomes(p: Painter, i: int, a: float) -> None:
    _dots(p, i, a, (15, 36), 0.085, weights=np.exp(-p.geom.rho / 0.2))


def _lipid_droplets(p: Painter, i: int, a: float) -> None:
    rn = p.geom.cells[i - 1].nradius
    ys, xs = _cyto_positions(p, i, int(p.rng.integers(3, 10)), p.geom.rho < 0.8)
    ys, xs = _rings(ys, xs, np.maximum(1.5, rn * p.rng.uniform(0.1, 0.18, ys.size)))
    p.cyto.curves(ys, xs, a, 0.6, 0.5 if ys.size else 1)


def _cytoplasmic_bodies(p: Painter, i: int, a: float) -> None:
    _dots(p, i, a, (1, 5), 0.11, weights=(p.geom.rho > 0.15) & (p.geom.rho < 0.8), amp=(0.8, 1.0))


def _rods_rings(p: Painter, i: int, a: float) -> None:
    rn = p.geom.cells[i - 1].nradius
    ys, xs = _cyto_positions(p, i, int(p.rng.integers(1, 5)), (p.geom.rho > 0.15) & (p.geom.rho < 0.8))
    rod = p.rng.random(ys.size) < 0.5
    ry, rx, _ = _dashes(ys[rod], xs[rod], p.rng.uniform(0, 2 * math.pi, rod.sum()), 0.45 * rn)
    p.cyto.curves(ry, rx, a, 0.8, 0.5)
    cy, cx = _rings(ys[~rod], xs[~rod], np.full((~rod).sum(), max(1.5, 0.15 * rn)))
    p.cyto.curves(cy, cx, a, 0.7, 0.5)


def _intermediate_filaments(p: Painter, i: int, a: float) -> None:
    g, rng, cell = p.geom, p.rng, p.geom.cells[i - 1]
    y0, x0 = _cyto_positions(p, i, int(rng.integers(14, 22)), np.exp(-g.rho / 0.4))
    tan = _radial(cell, y0, x0) + math.pi / 2  # around the nucleus
    y0, x0, tan = np.tile(y0, 2), np.tile(x0, 2), np.concatenate([tan, tan + math.pi])
    ys, xs = walk(rng, y0, x0, tan, int(1.2 * cell.radius / 0.5), 0.5, 0.09)
    ys, xs = clip_fibres(g, ys, xs, i)
    p.cyto.curves(ys, xs, 0.5 * a, 0.6, 0.5)


def _actin(p: Painter, i: int, a: float) -> None:
    g, rng, cell = p.geom, p.rng, p.geom.cells[i - 1]
    n, r = int(rng.integers(10, 19)), cell.radius
    ax = cell.angle + rng.normal(0, 0.08, n)
    off = rng.uniform(-r, r, n)
    t = np.arange(-2 * r, 2 * r, 0.5)
    ys = cell.cy + off[:, None] * np.cos(ax)[:, None] + t * np.sin(ax)[:, None]
    xs = cell.cx - off[:, None] * np.sin(ax)[:, None] + t * np.cos(ax)[:, None]
    amp = np.broadcast_to(rng.uniform(0.5, 1.0, (n, 1)), ys.shape)
    keep = g.cell_of(ys, xs) == i  # stress fibres run under the nucleus too
    p.green.curves(ys[keep], xs[keep], a * amp[keep], 0.6, 0.5)
    p.region("cell_rim", i, 0.4 * a)


def _focal_adhesions(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    ys, xs = _cyto_positions(p, i, int(p.rng.integers(12, 26)), p.geom.rho > 0.75)
    ys, xs, _ = _dashes(ys, xs, _radial(cell, ys, xs) + math.pi, 0.15 * cell.radius)  # pointing inwards
    ys, xs = clip_fibres(p.geom, ys, xs, i, stop=True)
    p.cyto.curves(ys, xs, a, 0.7, 0.5)


def _microtubules(p: Painter, i: int, a: float) -> None:
    p.region("microtubules", i, a)


def _microtubule_ends(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    ys, xs = _cyto_positions(p, i, int(p.rng.integers(35, 65)))
    theta = _radial(cell, ys, xs) + p.rng.normal(0, 0.3, ys.size)
    ys, xs, t = _dashes(ys, xs, theta, max(2.0, 0.08 * cell.radius))
    p.cyto.curves(ys, xs, 0.8 * a * (0.2 + 0.8 * t), 0.6, 0.5)  # comets: brightest at the growing tip


def _bridge_pattern(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    ys, xs = _bridge(p, i)
    p.green.curves(ys, xs, 0.7 * a, 0.7, 0.5)
    p.green.points(np.array([cell.ny]), np.array([cell.nx]), a, max(0.9, 0.08 * cell.nradius))


def _spindle_pattern(p: Painter, i: int, a: float) -> None:
    cell = p.geom.cells[i - 1]
    ys, xs = _spindle(p, i)
    p.green.curves(ys, xs, 0.5 * a, 0.6, 0.5)
    poles_y, poles_x = ys[:, [0, -1]].mean(axis=0), xs[:, [0, -1]].mean(axis=0)
    p.green.points(poles_y, poles_x, a, max(0.8, 0.08 * cell.nradius))


def _plasma_membrane(p: Painter, i: int, a: float) -> None:
    p.region("cell_rim", i, a)


def _cell_junctions(p: Painter, i: int, a: float) -> None:
    g = p.geom
    own_edge = (g.labels == i) & (g.d_edge == 0)
    others = (g.labels > 0) & (g.labels != i)
    if not others.any():  # alone in the field: nothing to join, draw the edge facing the field centre
        d = np.hypot(*np.indices(g.labels.shape) - g.size / 2)
    else:
        d = ndi.distance_transform_edt(~others)
    # The stretch of edge that touches (or nearly touches) the closest neighbour.
    dmin = float(d[own_edge].min()) if own_edge.any() else 0.0
    edge = np.flatnonzero((own_edge & (d <= dmin + max(2.0, 0.08 * g.cells[i - 1].radius))).ravel())
    p.green.points(edge // g.size, edge % g.size, 0.5 * a, 0.8)


def _mitochondria(p: Painter, i: int, a: float) -> None:
    g, rng, cell = p.geom, p.rng, p.geom.cells[i - 1]
    y0, x0 = _cyto_positions(p, i, int(rng.integers(25, 46)), np.exp(-g.rho / 0.35))
    ys, xs = walk(rng, y0, x0, rng.uniform(0, 2 * math.pi, y0.size), int(0.25 * cell.radius / 0.5), 0.5, 0.25)
    cut = np.arange(ys.shape[1]) < rng.uniform(0.3, 1.0, (y0.size, 1)) * ys.shape[1]  # lengths 0.08-0.25 R
    inside = cut & np.cumprod((g.cell_of(ys, xs) == i) & ~g.in_nucleus(ys, xs), axis=1).astype(bool)
    p.cyto.curves(ys[inside], xs[inside], 0.85 * a, 0.65, 0.5)


def _cytosol(p: Painter, i: int, a: float) -> None:
    p.region("cytosol", i, 0.8 * a)


def _negative(p: Painter, i: int, a: float) -> None:
    pass


#: Class name (as in :mod:`locbench.data.schemes`) → pattern.
PATTERNS = {
    "Nucleoplasm": _nucleoplasm,
    "Nuclear membrane": _nuclear_membrane,
    "Nucleoli": _nucleoli,
    "Nucleoli fibrillar center": _fibrillar_center,
    "Nuclear speckles": _speckles,
    "Nuclear bodies": _nuclear_bodies,
    "Endoplasmic reticulum": _er,
    "Golgi apparatus": _golgi,
    "Peroxisomes": _peroxisomes,
    "Endosomes": _endosomes,
    "Lysosomes": _lysosomes,
    "Intermediate filaments": _intermediate_filaments,
    "Actin filaments": _actin,
    "Focal adhesion sites": _focal_adhesions,
    "Microtubules": _microtubules,
    "Microtubule ends": _microtubule_ends,
    "Cytokinetic bridge": _bridge_pattern,
    "Mitotic spindle": _spindle_pattern,
    "Microtubule organizing center": _mtoc,
    "Centrosome": _centrosome,
    "Lipid droplets": _lipid_droplets,
    "Plasma membrane": _plasma_membrane,
    "Cell junctions": _cell_junctions,
    "Mitochondria": _mitochondria,
    "Aggresome": _aggresome,
    "Cytosol": _cytosol,
    "Cytoplasmic bodies": _cytoplasmic_bodies,
    "Rods & rings": _rods_rings,
    "Vesicles and punctate cytosolic patterns": _vesicles,
    "Negative": _negative,
}


def draw_field(
    rng: np.random.Generator,
    geom: Geometry,
    cell_classes: list[tuple[str, ...]],
    *,
    intensity_spread: float,
    background: float,
    noise: float,
) -> dict[str, np.ndarray]:
    """Draw the four stains of one field.

    Args:
        rng: the field's drawing random stream.
        geom: the layout, with dividing stages already set.
        cell_classes: for cell ``i`` (1-based), ``cell_classes[i - 1]`` lists its class names.
        intensity_spread: standard deviation of the per-cell log-brightness of the protein (the other stains
            vary half as much).
        background: offset added to every stain (fraction of full scale).
        noise: camera noise: shot noise with ``1 / noise**2`` photons at full scale plus Gaussian read noise of
            ``noise / 2``; 0 gives a clean field.

    Returns:
        ``{"red", "green", "blue", "yellow"}`` → float32 (S, S) arrays in [0, 1].
    """
    p = Painter(rng, geom)
    class_amp: dict[str, float] = {}
    cell_amp = np.exp(rng.normal(0, intensity_spread, geom.n))
    for i, names in enumerate(cell_classes, start=1):
        for name in names:
            a = class_amp.setdefault(name, float(rng.uniform(0.6, 1.0)))  # one protein per field: shared strength
            PATTERNS[name](p, i, a * float(cell_amp[i - 1]))
    out = p.stains(intensity_spread)
    out["green"] = p.render_green()
    gains = {"red": (0.35, 0.7), "green": (0.45, 0.95), "blue": (0.45, 0.8), "yellow": (0.45, 0.85)}
    for stain in ("red", "green", "blue", "yellow"):
        x = out[stain] * rng.uniform(*gains[stain]) + background * rng.uniform(0.7, 1.3)
        if noise > 0:
            photons = 1.0 / noise**2
            x = rng.poisson(np.clip(x, 0, None) * photons) / photons + rng.normal(0, noise / 2, x.shape)
        out[stain] = np.clip(x, 0, 1).astype(np.float32)
    return {c: out[c] for c in ("red", "green", "blue", "yellow")}
