"""Single-cell classification: segmentation backends, cell crops, the HPA 2021 cell metric, submissions."""

from locbench.cells.crops import CellCropDataset, CellIndex, index_cells
from locbench.cells.labels import load_cell_labels, read_cells_csv
from locbench.cells.metric import CellInstances, average_precision, cell_map, compare_masks, iou_matrix, pool_agreement
from locbench.cells.rle import decode_binary_mask, encode_binary_mask
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
    "SEGMENTERS",
    "CellCropDataset",
    "CellIndex",
    "CellInstances",
    "Segmenter",
    "SubmissionRow",
    "average_precision",
    "cell_map",
    "compare_masks",
    "decode_binary_mask",
    "encode_binary_mask",
    "index_cells",
    "iter_submission",
    "iou_matrix",
    "load_cell_labels",
    "read_cells_csv",
    "make_row",
    "make_segmenter",
    "pool_agreement",
    "read_submission",
    "row_from_instances",
    "rows_from_instances",
    "segment_dataset",
    "validate_submission",
    "write_submission",
]
