"""Single-cell classification: segmentation backends, cell crops, the HPA 2021 cell metric, submissions."""

from locbench.cells.combine import NEGATIVE_CLASS, NEGATIVE_RULES, apply_negative_rule, blend_probs
from locbench.cells.crops import CellCropDataset, CellIndex, index_cells
from locbench.cells.labels import load_cell_labels, read_cells_csv
from locbench.cells.metric import CellInstances, average_precision, cell_map, compare_masks, iou_matrix, pool_agreement
from locbench.cells.rle import decode_binary_mask, encode_binary_mask
from locbench.cells.scoring import (
    CellPredictions,
    TruthCells,
    format_cell_metrics,
    score_cells,
    segmentation_agreement,
    truth_cells,
)
from locbench.cells.segment import SEGMENTERS, Segmenter, make_segmenter, segment_dataset
from locbench.cells.submission import (
    SubmissionRow,
    iter_submission,
    make_row,
    read_submission,
    row_from_instances,
    rows_from_instances,
    validate_submission,
    write_submission,
)

__all__ = [
    "NEGATIVE_CLASS",
    "NEGATIVE_RULES",
    "SEGMENTERS",
    "CellCropDataset",
    "CellIndex",
    "CellInstances",
    "CellPredictions",
    "Segmenter",
    "SubmissionRow",
    "TruthCells",
    "apply_negative_rule",
    "average_precision",
    "blend_probs",
    "cell_map",
    "compare_masks",
    "decode_binary_mask",
    "encode_binary_mask",
    "format_cell_metrics",
    "index_cells",
    "iter_submission",
    "iou_matrix",
    "load_cell_labels",
    "make_row",
    "make_segmenter",
    "pool_agreement",
    "read_cells_csv",
    "read_submission",
    "row_from_instances",
    "rows_from_instances",
    "score_cells",
    "segment_dataset",
    "segmentation_agreement",
    "truth_cells",
    "validate_submission",
    "write_submission",
]
