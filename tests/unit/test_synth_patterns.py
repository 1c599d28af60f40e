"""Every class of both schemes draws green signal in its own compartment, and no two classes look alike."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from locbench.data.schemes import HPA2018, HPA2021, get_scheme
from locbench.data.synth import Field, make_field

NUCLEAR = {"Nucleoplasm", "Nucleoli", "Nucleoli fibrillar center", "Nuclear speckles", "Nuclear bodies"}
CYTOPLASMIC = {
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
    "Vesicles and punctate cytosolic patterns",
}
ALL = sorted(set(HPA2021) | set(HPA2018))


def _clean(name: str, seed: int = 3) -> Field:
    """A noise-free field whose every cell carries only ``name``."""
    scheme = get_scheme("hpa2021" if name in HPA2021 else "hpa2018")
    return make_field(
        seed,
        0,
        scheme=scheme,
        labels=(scheme.index(name),),
        size=160,
        cells_per_field=(3, 4),
        noise=0.0,
        intensity_spread=0.0,
        background=0.0,
    )


def _regions(f: Field) -> dict[str, np.ndarray]:
    cells = f.mask > 0
    nuc = f.nucleus
    cyto = cells & ~nuc
    cell_edge = find_boundaries(f.mask, mode="inner") & cells
    nuc_edge = find_boundaries(nuc.astype(np.uint8), mode="thick") & cells
    return {
        "nucleus": nuc,
        "nucleus_deep": ndi.binary_erosion(nuc, iterations=3),
        "cytoplasm": cyto,
        "cytoplasm_far": cyto & ~ndi.binary_dilation(nuc, iterations=3) & ~ndi.binary_dilation(cell_edge, iterations=2),
        "cell_edge": cell_edge,
        "cell_interior": cells & ~ndi.binary_dilation(cell_edge, iterations=3),
        "nucleus_edge": nuc_edge,
        "outside": ~cells,
    }


def _mean(img: np.ndarray, m: np.ndarray) -> float:
    return float(img[m].mean()) if m.any() else 0.0


def test_every_class_has_a_pattern():
    from locbench.data.synth_patterns import PATTERNS

    assert set(ALL) <= set(PATTERNS)


@pytest.mark.parametrize("name", sorted(NUCLEAR))
def test_nuclear_classes_light_the_nucleus(name):
    f = _clean(name)
    g, r = f.stains["green"].astype(float), _regions(f)
    assert _mean(g, r["nucleus"]) > 1.0
    assert _mean(g, r["nucleus"]) > 4 * _mean(g, r["cytoplasm"]) + 0.1


@pytest.mark.parametrize("name", sorted(CYTOPLASMIC & set(ALL)))
def test_cytoplasmic_classes_light_the_cytoplasm(name):
    f = _clean(name)
    g, r = f.stains["green"].astype(float), _regions(f)
    assert g.max() > 60, "pattern too faint"
    assert _mean(g, r["cytoplasm"]) > 3 * _mean(g, r["nucleus"]) + 0.05
    assert _mean(g, r["outside"]) < 0.5 * _mean(g, r["cytoplasm"])


def test_nuclear_membrane_is_the_nucleus_rim():
    f = _clean("Nuclear membrane")
    g, r = f.stains["green"].astype(float), _regions(f)
    assert _mean(g, r["nucleus_edge"]) > 4 * _mean(g, r["nucleus_deep"]) + 1
    assert _mean(g, r["nucleus_edge"]) > 4 * _mean(g, r["cytoplasm_far"]) + 1


def test_plasma_membrane_is_the_cell_rim():
    f = _clean("Plasma membrane")
    g, r = f.stains["green"].astype(float), _regions(f)
    assert _mean(g, r["cell_edge"]) > 5 * _mean(g, r["cell_interior"]) + 1


def test_cell_junctions_are_the_rim_between_cells_only():
    f = _clean("Cell junctions")
    g, r = f.stains["green"].astype(float), _regions(f)
    # Edge pixels next to another cell vs far (> 5 px) from any other cell. Cells touching nobody mark the edge
    # facing their nearest neighbour instead, so compare on touching cells only.
    contact, free = np.zeros_like(f.nucleus), np.zeros_like(f.nucleus)
    for i in range(1, f.mask.max() + 1):
        d_other = ndi.distance_transform_edt(~((f.mask > 0) & (f.mask != i)))
        own_edge = r["cell_edge"] & (f.mask == i)
        if (own_edge & (d_other <= 1.5)).sum() > 5:
            contact |= own_edge & (d_other <= 1.5)
            free |= own_edge & (d_other > 5)
    assert contact.any() and free.any()
    assert _mean(g, contact) > 3 * _mean(g, free) + 1
    assert _mean(g, r["cell_edge"]) > 3 * _mean(g, r["cell_interior"])


def test_actin_fibres_cross_the_whole_cell():
    f = _clean("Actin filaments")
    g, r = f.stains["green"].astype(float), _regions(f)
    # Stress fibres run under the nucleus as well: neither compartment dominates, unlike nuclear/cytosolic classes.
    ratio = _mean(g, r["nucleus"]) / _mean(g, r["cytoplasm"])
    assert 0.3 < ratio < 3


@pytest.mark.parametrize(("name", "stain"), [("Endoplasmic reticulum", "yellow"), ("Microtubules", "red")])
def test_er_and_microtubules_follow_their_reference_stain(name, stain):
    f = _clean(name)
    cells = f.mask > 0
    corr = np.corrcoef(f.stains["green"][cells].astype(float), f.stains[stain][cells].astype(float))[0, 1]
    assert corr > 0.8


@pytest.mark.parametrize(("name", "stage"), [("Mitotic spindle", "metaphase"), ("Cytokinetic bridge", "telophase")])
def test_mitotic_classes_draw_dividing_cells(name, stage):
    f = _clean(name)
    assert f.stages == [stage] * len(f.stages)
    g = f.stains["green"].astype(float)
    yy, xx = np.indices(g.shape)
    for i in range(1, f.mask.max() + 1):
        own = f.mask == i
        cy, cx = ndi.center_of_mass(f.nucleus & own)  # the chromatin: the spindle / bridge sit around it
        near = own & (np.hypot(yy - cy, xx - cx) < 0.55 * np.sqrt(own.sum() / np.pi))
        assert g[own].sum() > 0
        assert g[near].sum() > 0.8 * g[own].sum()


def test_interphase_classes_do_not_divide_labelled_cells():
    f = _clean("Nucleoplasm", seed=0)
    assert "interphase" in f.stages


def _blobs_per_cell(f: Field, frac: float = 0.5) -> list[int]:
    g = ndi.gaussian_filter(f.stains["green"].astype(float), 0.7)
    counts = []
    for i in range(1, f.mask.max() + 1):
        own = f.mask == i
        if g[own].max() < 20:
            continue
        counts.append(int(ndi.label(own & (g > frac * g[own].max()))[1]))
    return counts


def test_aggresome_is_one_blob_per_cell():
    counts = _blobs_per_cell(_clean("Aggresome"))
    assert counts and all(c == 1 for c in counts)


def test_centrosome_is_one_or_two_dots():
    counts = _blobs_per_cell(_clean("Centrosome"), frac=0.3)
    assert counts and all(1 <= c <= 2 for c in counts)


def test_golgi_is_compact_and_beside_the_nucleus():
    f = _clean("Golgi apparatus")
    g = f.stains["green"].astype(float)
    for i in range(1, f.mask.max() + 1):
        own = f.mask == i
        w = g * own
        ys, xs = np.nonzero(own)
        cy, cx = (w * np.indices(g.shape)[0]).sum() / w.sum(), (w * np.indices(g.shape)[1]).sum() / w.sum()
        spread = np.sqrt(
            (w * ((np.indices(g.shape)[0] - cy) ** 2 + (np.indices(g.shape)[1] - cx) ** 2)).sum() / w.sum()
        )
        cell_radius = np.sqrt(own.sum() / np.pi)
        assert spread < 0.3 * cell_radius
        nuc_dist = ndi.distance_transform_edt(~f.nucleus)[int(round(cy)), int(round(cx))]
        assert nuc_dist < 0.3 * cell_radius


def test_spot_counts_tell_nucleoli_from_speckles():
    nucleoli = _blobs_per_cell(_clean("Nucleoli"), frac=0.4)
    speckles = _blobs_per_cell(_clean("Nuclear speckles"), frac=0.4)
    assert max(nucleoli) <= 5
    assert np.mean(speckles) > np.mean(nucleoli) + 2


def test_negative_has_no_signal():
    f = _clean("Negative")
    assert f.stains["green"].max() == 0


@pytest.mark.parametrize("scheme", ["hpa2021", "hpa2018"])
def test_classes_are_pairwise_distinct(scheme):
    # Same cells (the layout does not depend on the labels), one class at a time.
    classes = get_scheme(scheme).classes
    greens = np.array([_clean(c, seed=7).stains["green"].astype(float).ravel() for c in classes if c != "Negative"])
    corr = np.corrcoef(greens)
    np.fill_diagonal(corr, 0)
    assert corr.max() < 0.9
