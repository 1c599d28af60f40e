"""``locbench cells evaluate|predict RUN_DIR``: cell-level scores and 2021 submissions; they run the code of
``locbench evaluate --level cell`` and ``locbench predict --level cell``, with the cell-level flags only."""

from __future__ import annotations

from locbench.commands import evaluate, predict
from locbench.commands._common import add_data_args, out_path
from locbench.commands._level import add_cell_args, add_protocol_arg, add_tta_arg


def add_parser(sub) -> None:
    p = sub.add_parser("cells", help="cell-level evaluation (HPA 2021 metric) and competition submissions")
    actions = p.add_subparsers(dest="cells_command", metavar="ACTION", required=True)

    e = actions.add_parser("evaluate", help="score a run per cell with the HPA 2021 metric (IoU 0.6)")
    e.add_argument("run_dir")
    e.add_argument(
        "--split",
        default=None,
        help="val, test or all (default: the run's test part, val for a run without one)",
    )
    e.add_argument("--truth-masks", default=None, help="true cell masks (default DATA/masks; labels DATA/cells.csv)")
    e.add_argument("--device", default="auto")
    e.add_argument("--workers", type=int, default=None)
    e.add_argument("--out", type=out_path, help="metrics JSON (default RUN_DIR/eval/cell_<split>.json)")
    add_tta_arg(e)
    add_cell_args(e)
    add_protocol_arg(e)
    add_data_args(e)  # --data: another dataset of the same classes (default: the run's own)
    e.set_defaults(func=evaluate.run, level="cell")

    s = actions.add_parser("predict", help="write a 2021 competition submission (ID,ImageWidth,ImageHeight,...)")
    s.add_argument("run_dir")
    s.add_argument("--out", required=True, type=out_path, help="submission CSV")
    s.add_argument("--min-confidence", type=float, default=None, help="leave out triples below this confidence")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=None)
    add_tta_arg(s)
    add_cell_args(s)
    add_data_args(s, required=True)  # --data: a dataset folder, its CSV, or a folder of {id}_{stain}.png images
    s.set_defaults(func=predict.run, level="cell", format="csv")
