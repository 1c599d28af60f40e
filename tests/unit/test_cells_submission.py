"""Submission rows: triples per (cell, class), the CSV layout, and decoding back to the masks."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from locbench.cells.submission import (
    SubmissionRow,
    iter_submission,
    make_row,
    parse_prediction_string,
    read_submission,
    validate_submission,
    write_submission,
)
from locbench.errors import BadInputError, LocbenchError


def mask() -> np.ndarray:
    m = np.zeros((6, 9), dtype=np.int32)  # non-square: a transposed width/height would not decode
    m[1:3, 1:4] = 1
    m[3:6, 5:9] = 2
    return m


def test_one_triple_per_cell_and_class_and_masks_decode_back(tmp_path):
    row = make_row("img", mask(), {1: {0: 0.9, 5: 0.25}, 2: {3: 1.0}})
    assert (row.width, row.height) == (9, 6)
    triples = parse_prediction_string(row)
    assert [(label, conf) for label, conf, _ in triples] == [(0, 0.9), (5, 0.25), (3, 1.0)]
    for (_, _, decoded), cell in zip(triples, (1, 1, 2), strict=True):
        np.testing.assert_array_equal(decoded, mask() == cell)


def test_array_scores_skip_nan_and_low_confidence():
    scores = np.array([[0.9, math.nan], [0.05, 0.5]])  # row k-1 is cell k
    row = make_row("img", mask(), scores, min_confidence=0.1)
    assert [(label, conf) for label, conf, _ in parse_prediction_string(row)] == [(0, 0.9), (1, 0.5)]


def test_scores_for_a_cell_without_pixels_are_refused():
    with pytest.raises(LocbenchError, match="cell 7 has scores but no pixels"):
        make_row("img", mask(), {7: {0: 0.5}})


def test_csv_round_trip_and_validation(tmp_path):
    rows = [make_row("a", mask(), {1: {0: 1.0}, 2: {1: 0.5}}), SubmissionRow("b", 9, 6, "")]
    path = write_submission(tmp_path / "submission.csv", rows)
    assert path.read_text().splitlines()[0] == "ID,ImageWidth,ImageHeight,PredictionString"
    assert path.read_text().splitlines()[2] == "b,9,6,"
    assert read_submission(path) == rows
    assert validate_submission(path, num_classes=19, ids=["a", "b"]) == {"images": 2, "triples": 2, "cells": 2}


def test_validation_names_bad_labels_and_missing_images(tmp_path):
    path = write_submission(tmp_path / "s.csv", [make_row("a", mask(), {1: {19: 1.0}})])
    with pytest.raises(BadInputError, match="a: label 19"):
        validate_submission(path, num_classes=19)
    path = write_submission(tmp_path / "s.csv", [make_row("a", mask(), {1: {0: 1.0}})])
    with pytest.raises(BadInputError, match="images without a row") as e:
        validate_submission(path, num_classes=19, ids=["a", "b"])
    assert e.value.items == ["b"]


def test_duplicate_image_and_bad_header_are_refused(tmp_path):
    with pytest.raises(LocbenchError, match="lists image a twice"):
        write_submission(tmp_path / "s.csv", [SubmissionRow("a", 1, 1, "")] * 2)
    (tmp_path / "bad.csv").write_text("Id,Predicted\nx,1\n")
    with pytest.raises(LocbenchError, match="expected 'ID,ImageWidth"):
        read_submission(tmp_path / "bad.csv")


def test_rows_of_any_size_stream_out_and_back(tmp_path):
    # Two speckled 300 x 300 px cells: RLEs that barely compress, 20 triples -> a CSV field over 128 kiB
    big = np.random.default_rng(0).integers(1, 3, size=(300, 300), dtype=np.int32)

    def rows():  # a generator: write_submission never needs the whole list
        for name in ("x", "y"):
            yield make_row(name, big, {1: {c: 0.5 for c in range(19)}, 2: {0: 1.0}})

    path = write_submission(tmp_path / "big.csv", rows())
    back = list(iter_submission(path))
    assert [r.image_id for r in back] == ["x", "y"] and len(back[0].prediction_string) > 131072
    assert back == read_submission(path) == list(rows())
    assert validate_submission(path, num_classes=19, ids=["x", "y"]) == {"images": 2, "triples": 40, "cells": 4}
    assert csv.field_size_limit() == 131072  # the process-wide limit is put back
