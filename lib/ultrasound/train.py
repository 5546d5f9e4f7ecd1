"""Training the ultrasound CNNs: settings per profile, augmentation, the training loop.

The loop is plain PyTorch: class-weighted cross-entropy (optionally label-smoothed), AdamW
with a one-cycle learning-rate schedule, augmentation done in batches on the device (optionally
followed by mixup of image pairs), an exponential moving average of the weights, and early
stopping on the validation loss of that average (the weights of the best epoch are kept). The
forward and backward passes of training may run under bfloat16 autocast and in channels-last
memory layout (faster on CPUs with bfloat16 instructions); validation and the kept weights are
always float32. Every random draw comes from generators seeded by ``seed``, so a run repeats
exactly on the same machine with the same number of threads.

A run may also train on randomly permuted training labels (``shuffled_labels_seed``): the
data-randomisation check of explanation methods needs a network that memorised noise. Such a
run keeps its last epoch, since a validation loss against real labels says nothing about it.
"""
import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .. import data, hardware
from ..progress import progress
from . import evaluate, models


@dataclass(frozen=True)
class Augmentation:
    """Random changes an ultrasound image could plausibly show, drawn per image.

    Left-right flips (no up-down flips: depth runs downwards and the shadow behind a lesion is
    a diagnostic cue), small rotations (probe tilt), zoom and shift (probe position), gain
    and contrast (the machine's settings) and multiplicative speckle-like noise.
    """

    hflip: bool = True
    rotate: float = 10.0      # maximal rotation, degrees
    scale: float = 0.1        # zoom factor drawn from [1 - scale, 1 + scale]
    shift: float = 0.05       # maximal shift, as a fraction of the image side
    gain: float = 0.1         # added brightness drawn from [-gain, gain]
    contrast: float = 0.2     # contrast factor drawn from [1 - contrast, 1 + contrast]
    speckle: float = 0.05     # standard deviation of the multiplicative noise

    def __post_init__(self):
        for name in ("rotate", "scale", "shift", "gain", "contrast", "speckle"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"augmentation {name} must be a number >= 0, got {value!r}")
        if self.scale >= 1 or self.contrast >= 1:
            raise ValueError("augmentation scale and contrast must be below 1")


PRECISIONS = ("float32", "bfloat16")
CLASS_WEIGHTINGS = {"inverse": 1.0, "sqrt": 0.5, "none": 0.0}  # name -> power of 1 / count


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run besides the architecture and the seed."""

    image_size: int
    epochs: int
    batch_size: int
    lr: float                 # peak learning rate of the one-cycle schedule
    weight_decay: float
    patience: int             # epochs without a better validation loss before stopping
    augment: Augmentation = field(default_factory=Augmentation)
    ema_decay: float = 0.0    # per-step decay of the weight average that is validated and
                              # kept (0: the raw weights)
    label_smoothing: float = 0.0  # of the training loss (validation loss is never smoothed)
    mixup: bool = False       # train on convex mixtures of image pairs and of their labels
    class_weighting: str = "inverse"  # of the training loss (see class_weights); the
                                      # validation loss always weighs classes equally
    precision: str = "float32"    # of training forward/backward passes: float32 | bfloat16
    channels_last: bool = False   # train in channels-last memory layout
    width: float = 1.0        # channel multiplier of VGG-16 (lib.ultrasound.models.build)
    shuffled_labels_seed: int | None = None  # train on labels permuted with this seed
    train_subset: int | None = None  # use only this many training images (smoke runs)
    val_subset: int | None = None

    def __post_init__(self):
        for name in ("image_size", "epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("train_subset", "val_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ValueError(f"{name} must be None or an integer >= 2, got {value!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not 0 < self.lr < math.inf or not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr!r}, "
                             f"weight_decay={self.weight_decay!r}")
        models.check_width_value(self.width)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, "
                             f"got {self.class_weighting!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")
        for name in ("channels_last", "mixup"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        seed = self.shuffled_labels_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"shuffled_labels_seed must be None or an integer, got {seed!r}")

    @property
    def keeps_best_epoch(self) -> bool:
        """Early stopping on the validation loss, except on shuffled labels (last epoch kept)."""
        return self.shuffled_labels_seed is None


def augment(images: torch.Tensor, aug: Augmentation, generator: torch.Generator):
    """A randomly changed copy of a batch of [0, 1] images (N x C x H x W), on their device.

    One affine resampling per batch (rotation, zoom, shift, flip), then gain, contrast and
    speckle; the result is kept in [0, 1], the range of a real image.
    """
    n, dev = len(images), images.device

    def uniform(*shape, low=-1.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=generator, device=dev)

    angle = uniform(n) * math.radians(aug.rotate)
    zoom = 1 + uniform(n) * aug.scale
    flip = torch.where(uniform(n) < 0, -1.0, 1.0) if aug.hflip else torch.ones(n, device=dev)
    # affine_grid maps output to input coordinates in [-1, 1]: a shift of f image sides is 2f.
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = torch.cos(angle) * flip / zoom
    theta[:, 0, 1] = -torch.sin(angle) / zoom
    theta[:, 1, 0] = torch.sin(angle) * flip / zoom
    theta[:, 1, 1] = torch.cos(angle) / zoom
    theta[:, :, 2] = uniform(n, 2) * 2 * aug.shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + uniform(n, 1, 1, 1) * aug.contrast
    gain = uniform(n, 1, 1, 1) * aug.gain
    out = (out - mean) * contrast + mean + gain
    if aug.speckle > 0:
        noise = torch.randn(out.shape, generator=generator, device=dev)
        out = out * (1 + aug.speckle * noise)
    return out.clamp(0, 1)


def class_weights(labels: torch.Tensor, num_classes: int,
                  scheme: str = "inverse") -> torch.Tensor:
    """Per-class loss weights ``w_c``, proportional to ``n_c ** -p``, scaled so that an image
    weighs 1 on average (``sum_c n_c w_c = n``).

    ``"inverse"`` (p = 1, ``n / (k * n_c)``): every class counts as much in the loss;
    ``"sqrt"`` (p = 1/2): halfway, in logarithm, towards ``"none"`` (p = 0, every image alike).
    """
    if scheme not in CLASS_WEIGHTINGS:
        raise ValueError(f"class weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, got "
                         f"{scheme!r}")
    counts = torch.bincount(labels, minlength=num_classes).double()
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"class(es) {missing} have no training images")
    weights = counts ** -CLASS_WEIGHTINGS[scheme]
    return (weights * len(labels) / (counts * weights).sum()).float()


@dataclass
class FitResult:
    state_dict: dict          # weights of the kept epoch, float32 and contiguous, on the CPU
    history: dict             # per-epoch curves: lists keyed by name
    best_epoch: int           # 1-based epoch whose weights were kept
    epochs_run: int
    seconds: float


def fit(model, train_set, val_set, config: TrainConfig, *, seed: int, desc: str = "training"):
    """Train ``model`` in place on ``train_set`` = (images, labels), early-stopping on
    ``val_set``; returns a :class:`FitResult` holding the weights of the best epoch (of the last
    epoch when ``config.keeps_best_epoch`` is false)."""
    start = time.perf_counter()
    dev = next(model.parameters()).device
    images, labels = (t.to(dev) for t in train_set)
    val_images, val_labels = (t.to(dev) for t in val_set)
    num_classes = models.predict_logits(model.eval(), images[:1]).shape[1]
    weights = class_weights(labels, num_classes, config.class_weighting).to(dev)
    # Recipes are compared by the validation loss, so it weighs classes alike in every recipe.
    val_weights = class_weights(labels, num_classes).to(dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    batches_per_epoch = max(1, len(images) // config.batch_size)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * batches_per_epoch,
        pct_start=0.2)
    averaged = _moving_average(model, config.ema_decay)
    evaluated = averaged.module if averaged else model
    history = {name: [] for name in ("train_loss", "train_accuracy", "val_loss",
                                     "val_accuracy", "val_balanced_accuracy")}
    best = (math.inf, 0, None)  # validation loss, epoch, weights
    bar = progress(total=config.epochs * batches_per_epoch, desc=desc, unit="batch")
    for epoch in range(1, config.epochs + 1):
        train_loss, train_acc = _train_epoch(model, images, labels, weights, optimizer,
                                             schedule, config, generator, bar, averaged)
        val_loss, val_acc, val_bacc = _validate(evaluated, val_images, val_labels,
                                                val_weights)
        for name, value in zip(history, (train_loss, train_acc, val_loss, val_acc, val_bacc)):
            history[name].append(value)
        bar.set_postfix_str(f"epoch {epoch} loss {train_loss:.3f} acc {train_acc:.3f} "
                            f"val_loss {val_loss:.3f} val_bacc {val_bacc:.3f}")
        if not config.keeps_best_epoch:
            if epoch == config.epochs:
                best = (val_loss, epoch, _cpu_weights(evaluated))
        elif val_loss < best[0]:
            best = (val_loss, epoch, _cpu_weights(evaluated))
        elif epoch - best[1] >= config.patience:
            break
    bar.close()
    if config.channels_last:  # hand the model back in the layout it came in
        model.to(memory_format=torch.contiguous_format)
    if best[2] is None:
        raise RuntimeError(f"training diverged: the validation loss was never finite "
                           f"({history['val_loss']}); try a smaller lr than {config.lr}")
    return FitResult(state_dict=best[2], history=history, best_epoch=best[1],
                     epochs_run=epoch, seconds=time.perf_counter() - start)


def _cpu_weights(model) -> dict:
    """A contiguous CPU copy of the state dict (channels-last training leaves strided weights)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
            for k, v in model.state_dict().items()}


def _moving_average(model, decay: float):
    """An exponential moving average of the weights and batch-norm statistics, or None.

    The average changes smoothly from step to step, so its validation loss is less noisy than
    the raw weights' on a small data set, and it generalises at least as well.
    """
    if decay == 0:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def _validate(model, images, labels, class_weight):
    """Weighted loss, accuracy and balanced accuracy on unaugmented images, in eval mode."""
    logits = models.predict_logits(model.eval(), images).float()
    loss = F.cross_entropy(logits, labels, weight=class_weight).item()
    if not math.isfinite(loss):  # diverged: `fit` says so once no epoch was ever finite
        return loss, math.nan, math.nan
    scores = evaluate.metrics(labels, logits)
    return loss, scores["accuracy"], scores["balanced_accuracy"]


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (a no-op for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision))


def train_step(model, images, labels, class_weight, optimizer, aug: Augmentation, generator, *,
               label_smoothing: float = 0.0, precision: str = "float32",
               channels_last: bool = False, mixup: bool = False):
    """One optimisation step on an augmented copy of a batch; returns its logits and loss.

    Augmentation and the optimiser step are float32; ``precision`` applies to the forward pass
    (its backward pass follows it). With ``channels_last`` the model must already be in that
    layout (``fit`` converts it). With ``mixup`` the batch is mixed with a shuffled copy of
    itself, ``w * x + (1 - w) * x'`` with one weight ``w`` drawn uniformly from [0, 1] per
    batch, and the loss is the same mixture of the two images' losses.
    """
    batch = augment(images, aug, generator)
    if mixup:
        partner = torch.randperm(len(batch), generator=generator, device=batch.device)
        share = torch.rand((), generator=generator, device=batch.device)
        batch = share * batch + (1 - share) * batch[partner]
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with autocast(precision, images.device):
        logits = model(batch)
    loss = F.cross_entropy(logits.float(), labels, weight=class_weight,
                           label_smoothing=label_smoothing)
    if mixup:
        loss = share * loss + (1 - share) * F.cross_entropy(
            logits.float(), labels[partner], weight=class_weight,
            label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits.detach().float(), loss.detach()


def _train_epoch(model, images, labels, weights, optimizer, schedule, config, generator, bar,
                 averaged=None):
    """One pass over the shuffled training images; returns the mean loss and accuracy."""
    model.train()
    order = torch.randperm(len(images), generator=generator, device=images.device)
    total_loss, correct, seen = 0.0, 0, 0
    batch = config.batch_size
    # The incomplete last batch is dropped: batch statistics of a few images are noise.
    for start in range(0, max(len(order) - batch, 0) + 1, batch):
        index = order[start:start + batch]
        logits, loss = train_step(model, images[index], labels[index], weights, optimizer,
                                  config.augment, generator,
                                  label_smoothing=config.label_smoothing,
                                  precision=config.precision, channels_last=config.channels_last,
                                  mixup=config.mixup)
        schedule.step()
        if averaged is not None:
            averaged.update_parameters(model)
        total_loss += loss.item() * len(index)
        correct += (logits.argmax(dim=1) == labels[index]).sum().item()
        seen += len(index)
        bar.update(1)
    return total_loss / seen, correct / seen


def subset(images, labels, size, seed: int):
    """``size`` images drawn at random without replacement (all of them when ``size`` is None)."""
    if size is None or size >= len(labels):
        return images, labels
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
    return images[order], labels[order]


def shuffled_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """``labels`` randomly permuted with ``seed``: the class counts stay, the link to the image
    goes."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return labels[order.to(labels.device)]


def train_checkpoint(arch: str, config: TrainConfig, *, weights=None, seed: int = 0,
                     device=None, verbose: bool = True) -> dict:
    """Train ``arch`` on the BUSI training split and return a checkpoint dictionary.

    Besides the weights and learning curves it holds ``train_scores``: the kept weights' metrics
    on the unaugmented training images against the labels trained on (shuffled ones when
    ``config.shuffled_labels_seed`` is set: how far the network memorised them).
    """
    dev = device or hardware.device()
    train_split = data.load_busi("train", size=config.image_size)
    val_split = data.load_busi("val", size=config.image_size)
    train_set = subset(train_split.images, train_split.labels, config.train_subset, seed)
    val_set = subset(val_split.images, val_split.labels, config.val_subset, seed)
    if config.shuffled_labels_seed is not None:
        train_set = (train_set[0], shuffled_labels(train_set[1], config.shuffled_labels_seed))
    if verbose:
        start = "ImageNet weights" if weights == "imagenet" else "scratch"
        shuffled = " (labels shuffled)" if config.shuffled_labels_seed is not None else ""
        print(f"training {arch} from {start}: {len(train_set[1])} images{shuffled} of "
              f"{config.image_size} px, up to {config.epochs} epochs, on "
              f"{hardware.describe(dev)}")
    model = models.build(arch, num_classes=len(train_split.classes), weights=weights,
                         width=config.width).to(dev)
    result = fit(model, train_set, val_set, config, seed=seed, desc=arch)
    model.load_state_dict(result.state_dict)
    train_scores = evaluate.metrics(train_set[1].to(dev),
                                    models.predict_logits(model.eval(), train_set[0]))
    return {"state_dict": result.state_dict, "history": result.history,
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "seconds": result.seconds, "trained_on": hardware.describe(dev),
            "classes": list(train_split.classes), "config": asdict(config),
            "train_scores": train_scores}
