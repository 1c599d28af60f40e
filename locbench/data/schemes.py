"""The two HPA class schemes, with their official names and index order."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from locbench.errors import LocbenchError

#: Kaggle 2021 "Human Protein Atlas - Single Cell Classification" (19 classes).
HPA2021 = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)

#: Kaggle 2018 "Human Protein Atlas Image Classification" (28 classes).
HPA2018 = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)


@dataclass(frozen=True)
class ClassScheme:
    """A named, ordered list of localization classes."""

    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def lookup(self, name: str) -> int | None:
        """The index of class ``name`` compared case-insensitively (labels by name), or None."""
        key = name.strip().casefold()
        return next((k for k, c in enumerate(self.classes) if c.casefold() == key), None)

    def closest(self, name: str) -> str | None:
        """The class name closest to a mistyped ``name`` (difflib's ratio >= 0.6, case-insensitive), or None."""
        folded = {c.casefold(): c for c in self.classes}
        close = difflib.get_close_matches(name.strip().casefold(), list(folded), n=1, cutoff=0.6)
        return folded[close[0]] if close else None

    def index(self, class_name: str) -> int:
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise LocbenchError(f"class {class_name!r} is not in scheme {self.name!r}") from None


SCHEMES = {
    "hpa2021": ClassScheme("hpa2021", HPA2021),
    "hpa2018": ClassScheme("hpa2018", HPA2018),
}


def get_scheme(name: str) -> ClassScheme:
    """Return a built-in scheme by name (``hpa2021`` or ``hpa2018``)."""
    if name not in SCHEMES:
        raise LocbenchError(f"unknown class scheme {name!r}; valid: {', '.join(SCHEMES)}")
    return SCHEMES[name]
