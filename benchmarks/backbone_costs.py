"""Parameters, GMACs and CPU training-step throughput of the study's six backbones (random init, no download).

python benchmarks/backbone_costs.py --size 256 --batch-size 8 --steps 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STUDY = ["nfnet_l0", "resnet50", "inception_v3", "efficientnet_b0", "efficientnet_b3", "efficientnet_b5"]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="*", default=STUDY)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--out", default="benchmarks/out/backbone_costs.json")
    args = p.parse_args(argv)

    import torch

    from locbench.config import ModelConfig
    from locbench.models import build_model, count_params, measure_gmacs

    rows = []
    for name in args.models:
        model = build_model(ModelConfig(backbone=name), num_classes=19, in_chans=args.in_chans)
        params, gmacs = count_params(model), measure_gmacs(model, args.in_chans, args.size)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch_size, args.in_chans, args.size, args.size)
        y = (torch.rand(args.batch_size, 19) > 0.8).float()
        model.train()
        times = []
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step:
                times.append(time.perf_counter() - t0)
        step_s = sorted(times)[len(times) // 2]
        rows.append(
            {
                "backbone": name,
                "params_m": params / 1e6,
                "gmacs": gmacs,
                "step_s": step_s,
                "img_per_s": args.batch_size / step_s,
            }
        )
        print(
            f"{name:16s} {params / 1e6:7.2f} M params  {gmacs:6.2f} GMACs  {args.batch_size / step_s:6.1f} img/s "
            f"(train step, CPU, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.size} px)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
