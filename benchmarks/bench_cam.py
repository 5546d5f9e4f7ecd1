"""lib.kernels.cam.grad_cam against pytorch-grad-cam's GradCAM, side by side.

    .venv/bin/python benchmarks/bench_cam.py [--arch resnet18 vgg16] [--batch 64] [--size 224]
                                             [--repeats 3]

Both sides explain the same batch with the same randomly initialised network (the cost does
not depend on the weights), the same layer (ResNet-18 ``layer4``, VGG-16 ``features.29``) and
the same classes (the predicted ones, computed once), and return maps upsampled to the input
and min-max normalised per image. pytorch-grad-cam differentiates the whole network (parameter
gradients included) and moves activations and gradients to NumPy; ours differentiates only
the part after the layer and stays on the device. The script prints both times (best of
``--repeats``, after one warm-up call each), the ratio pytorch-grad-cam / ours (above 1: ours is
faster) and the largest difference between the maps. The load average is printed, since other
work on the same cores slows both sides.
"""
import argparse
import os
import platform
import sys
from pathlib import Path

import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.kernels import cam, hooks  # noqa: E402
from lib.timing import best_times  # noqa: E402

LAYERS = {"resnet18": "layer4", "vgg16": "features.29"}


def compare(arch, batch, size, repeats, dev):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=3).eval().to(dev)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dev)
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    layer = LAYERS[arch]

    def ours():
        return cam.grad_cam(model, x, classes, layer=layer, normalize=True, batch_size=batch,
                            show_progress=False)

    def theirs():
        with GradCAM(model, [hooks.get_layer(model, layer)]) as reference:
            return reference(x, [ClassifierOutputTarget(int(c)) for c in classes])

    timed = best_times({"ours": ours, "theirs": theirs}, repeats, device=dev)
    (ours_time, ours_maps), (theirs_time, theirs_maps) = (
        (timed[side].wall, timed[side].result) for side in ("ours", "theirs"))
    difference = (ours_maps[:, 0].cpu() - torch.from_numpy(theirs_maps)).abs().max().item()
    print(f"{arch:9s} {batch:3d} x {size:3d} px  ours {ours_time:7.2f} s  "
          f"pytorch-grad-cam {theirs_time:7.2f} s  ratio {theirs_time / ours_time:5.2f}x  "
          f"max |difference| {difference:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet18"], choices=sorted(LAYERS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dev = lib.device()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {lib.hardware.describe(dev)}, torch {torch.__version__}, "
          f"{platform.machine()}, load average {load:.1f}")
    for arch in args.arch:
        compare(arch, args.batch, args.size, args.repeats, dev)


if __name__ == "__main__":
    main()
