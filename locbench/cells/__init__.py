"""Single-cell classification: segmentation backends, cell crops, the HPA 2021 cell metric, submissions.

Names are imported on first use: worker processes that import one light module of the package (the cell
crop cache, segmentation) then start without importing torch and the rest of it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name → module
_API = {
    "NEGATIVE_CLASS": "locbench.cells.combine",
    "NEGATIVE_RULES": "locbench.cells.combine",
    "apply_negative_rule": "locbench.cells.combine",
    "blend_probs": "locbench.cells.combine",
    "CellCropDataset": "locbench.cells.crops",
    "CellIndex": "locbench.cells.crops",
    "index_cells": "locbench.cells.crops",
    "load_cell_labels": "locbench.cells.labels",
    "read_cells_csv": "locbench.cells.labels",
    "CellInstances": "locbench.cells.metric",
    "average_precision": "locbench.cells.metric",
    "cell_map": "locbench.cells.metric",
    "compare_masks": "locbench.cells.metric",
    "iou_matrix": "locbench.cells.metric",
    "pool_agreement": "locbench.cells.metric",
    "decode_binary_mask": "locbench.cells.rle",
    "encode_binary_mask": "locbench.cells.rle",
    "CellPredictions": "locbench.cells.scoring",
    "TruthCells": "locbench.cells.scoring",
    "format_cell_metrics": "locbench.cells.scoring",
    "score_cells": "locbench.cells.scoring",
    "segmentation_agreement": "locbench.cells.scoring",
    "truth_cells": "locbench.cells.scoring",
    "SEGMENTERS": "locbench.cells.segment",
    "Segmenter": "locbench.cells.segment",
    "make_segmenter": "locbench.cells.segment",
    "segment_dataset": "locbench.cells.segment",
    "SubmissionRow": "locbench.cells.submission",
    "iter_submission": "locbench.cells.submission",
    "make_row": "locbench.cells.submission",
    "read_submission": "locbench.cells.submission",
    "row_from_instances": "locbench.cells.submission",
    "rows_from_instances": "locbench.cells.submission",
    "validate_submission": "locbench.cells.submission",
    "write_submission": "locbench.cells.submission",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'locbench.cells' has no attribute {name!r}")
