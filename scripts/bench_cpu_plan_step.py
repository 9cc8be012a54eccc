"""Time one training step of a `--target cpu` plan on 2 threads, beside the bare U-Net.

Checks the planner's CPU budget (documentation/planning.md): a step should stay well under a
second on an idle 2-core machine. Run on a quiet machine; other jobs inflate every number.

    .venv/bin/python scripts/bench_cpu_plan_step.py PATH/TO/plans.json [--plan NAME] [--reps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nndet.model.detector import RetinaUNet
from nndet.planning.plan import Plan, load_plans


def bare_unet(plan: Plan) -> nn.Module:
    topo, two_d = plan.topology, plan.dim == 2
    return PlainConvUNet(
        plan.num_modalities, topo.num_stages, topo.features_per_stage,
        nn.Conv2d if two_d else nn.Conv3d, topo.kernel_sizes, topo.strides,
        topo.n_conv_per_stage, plan.num_classes + 1, topo.n_conv_per_stage_decoder, True,
        nn.InstanceNorm2d if two_d else nn.InstanceNorm3d, {"eps": 1e-5, "affine": True},
        None, None, nn.LeakyReLU, {"inplace": True},
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans")
    parser.add_argument("--plan", default=None)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    plan = load_plans(args.plans).get(args.plan)
    batch, patch = plan.batch_size, plan.patch_size
    images = torch.randn(batch, plan.num_modalities, *patch)
    box = [p // 4 for p in patch] + [p // 4 + max(2, p // 6) for p in patch]
    targets = {
        "boxes": [torch.tensor([box], dtype=torch.float32) for _ in range(batch)],
        "labels": [torch.tensor([0]) for _ in range(batch)],
        "seg": torch.zeros(batch, *patch, dtype=torch.long),
    }
    detector, unet = RetinaUNet.from_plan(plan), bare_unet(plan)
    opt = torch.optim.SGD(detector.parameters(), lr=1e-3)

    times: dict[str, list[float]] = {"unet": [], "detector": []}
    for _ in range(args.reps):
        start = time.perf_counter()
        unet(images).mean().backward()
        times["unet"].append(time.perf_counter() - start)

        start = time.perf_counter()
        loss = detector.compute_loss(detector(images), targets)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times["detector"].append(time.perf_counter() - start)

    print(
        f"plan {plan.name}: patch {patch}, batch {batch}, widths {plan.topology.features_per_stage}"
    )
    for name, values in times.items():
        values = sorted(values)
        print(f"{name:9s} step: min {values[0]:.3f} s, median {values[len(values) // 2]:.3f} s")


if __name__ == "__main__":
    main()
