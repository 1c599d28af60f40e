"""Why a model says what it says: class activation maps, error analysis from stored predictions, and a CAM
localization check on synthetic data.

``locbench.explain.mistakes`` and ``locbench.explain.localization`` need no torch; ``cam`` does.
"""

from locbench.explain.cam import METHODS, compute_cams, default_target_layer, make_reshape_transform
from locbench.explain.localization import (
    area_share,
    cam_mass_inside,
    localization_markdown,
    localization_report,
    read_mask,
    resize_mask,
)
from locbench.explain.mistakes import (
    error_tables,
    errors_html,
    errors_markdown,
    hardest_ids,
    plot_perf_vs_frequency,
)
from locbench.explain.overlay import (
    CamPanel,
    CamRow,
    cam_rows,
    classes_to_explain,
    explain_images,
    outcome,
    render_cam_grid,
    rgb_composite,
)
from locbench.explain.thumbs import thumb_name, write_thumbnails

__all__ = [
    "METHODS",
    "CamPanel",
    "CamRow",
    "area_share",
    "cam_mass_inside",
    "cam_rows",
    "classes_to_explain",
    "compute_cams",
    "default_target_layer",
    "error_tables",
    "errors_html",
    "errors_markdown",
    "explain_images",
    "hardest_ids",
    "localization_markdown",
    "localization_report",
    "make_reshape_transform",
    "outcome",
    "plot_perf_vs_frequency",
    "read_mask",
    "render_cam_grid",
    "resize_mask",
    "rgb_composite",
    "thumb_name",
    "write_thumbnails",
]
