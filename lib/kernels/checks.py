"""Argument checks shared by the image kernels, so one mistake gets one message everywhere."""
import math
import numbers

import torch


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def integer(name: str, value, minimum: int = 1) -> int:
    """An integer ``value`` (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}; got {value!r}")
    return int(value)


def confidence_level(value, name: str = "conf_level") -> float:
    """A number strictly between 0 and 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
    return float(value)


def positive_int(name: str, value) -> int:
    return integer(name, value, 1)


def finite_number(name: str, value, *, positive: bool = False) -> float:
    """A finite real ``value`` that is non-negative (``positive``: above zero)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'positive' if positive else 'non-negative'}; "
                         f"got {value!r}")
    return float(value)


def choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def eval_model(model, *, module_only: bool = True) -> None:
    """A model in eval mode: a ``torch.nn.Module``, or any callable when ``module_only`` is off."""
    if module_only and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(model):
        raise TypeError(f"model must be a torch.nn.Module or a callable; got "
                        f"{type(model).__name__}")
    if isinstance(model, torch.nn.Module) and model.training:
        # Dropout and batch statistics would make every result random and batch-dependent.
        raise ValueError("the model is in training mode (dropout and batch norm would make the "
                         "results random and batch-dependent); call model.eval() first")


def image_batch(images, name: str = "images") -> torch.Tensor:
    """A non-empty, finite, floating ``N x C x H x W`` tensor."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point N x C x H x W tensor; got "
                        f"{describe(images)}")
    if images.ndim != 4 or 0 in images.shape:
        raise ValueError(f"{name} must be a non-empty batch of images N x C x H x W; got shape "
                         f"{tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return images


def map_batch(maps, name: str = "maps", *, one_channel: bool = False) -> torch.Tensor:
    """Non-empty, finite, floating maps as ``N x K x H x W`` (``N x H x W`` gets ``K = 1``);
    ``one_channel``: one map per image, ``K = 1``."""
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {describe(maps)}")
    if maps.ndim == 3:
        maps = maps.unsqueeze(1)
    if maps.ndim != 4 or 0 in maps.shape or (one_channel and maps.shape[1] != 1):
        wanted = "N x 1 x H x W or N x H x W (one map per image; sum or pick channels first)" \
            if one_channel else "N x K x H x W or N x H x W"
        raise ValueError(f"{name} must be {wanted}; got shape {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return maps


def same_device(model, device: torch.device, name: str = "images") -> None:
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if param is not None and param.device != device:
        raise ValueError(f"the model is on {param.device} and {name} on {device}; move both "
                         f"to the same device (lib.device())")


def model_and_images(model, images, *, name: str = "images", module_only: bool = True):
    """An eval-mode model and a batch of images on its device; returns the images."""
    eval_model(model, module_only=module_only)
    image_batch(images, name)
    same_device(model, images.device, name)
    return images


def class_targets(target, batch: int, device, *, allow_none: bool = False):
    """``target`` (an int, a sequence or a 1-D tensor of ints) as one class index per image, a
    long tensor on ``device``; ``None`` (each image's predicted class) stays ``None`` where
    ``allow_none``."""
    if target is None and allow_none:
        return None
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        values = torch.full((batch,), int(target), dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices; got dtype {target.dtype}")
        values = target
    elif isinstance(target, (list, tuple)) and all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in target):
        values = torch.tensor(target, dtype=torch.long)
    else:
        accepted = "None, an int" if allow_none else "an int"
        raise TypeError(f"target must be {accepted} or a sequence/1-D tensor of ints; got "
                        f"{describe(target)}")
    if values.ndim != 1 or values.shape[0] != batch:
        raise ValueError(f"target must hold one class per image ({batch}); got shape "
                         f"{tuple(values.shape)}")
    if (values < 0).any():
        raise ValueError(f"target classes must be non-negative; got {sorted(set(values.tolist()))}")
    return values.to(device=device, dtype=torch.long)


def classes_in_range(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target classes must be in 0..{num_classes - 1} for this model; got "
                         f"{sorted(set(target.tolist()))}")
    return target


def classes_or_predictions(target, logits: torch.Tensor) -> torch.Tensor:
    """``target`` checked against the model's classes, or the predicted class of each image
    where ``target`` is None; ``logits`` are the model's scores of the intact images."""
    given = class_targets(target, logits.shape[0], logits.device, allow_none=True)
    if given is None:
        return logits.argmax(dim=1)
    return classes_in_range(given, logits.shape[1])


def finite(values: torch.Tensor, what: str, index: str = "image", axis: int = 0,
           offset: int = 0):
    """``values`` when every entry is finite; else a ValueError naming ``what`` and the
    indices along ``axis`` (``index``: what they count, e.g. images; ``offset`` is added, for
    a part of a larger batch) where it is not."""
    good = torch.isfinite(values)
    if bool(good.all()):
        return values
    bad = (~good).movedim(axis, 0).reshape(values.shape[axis], -1).any(1)
    where = [offset + i for i in bad.nonzero().flatten().tolist()]
    more = " ..." if len(where) > 10 else ""
    raise ValueError(f"{what} is NaN or infinite for {index} {where[:10]}{more} "
                     f"({len(where)} of {values.shape[axis]}); no result is given for "
                     f"non-finite values, which would otherwise read as confident answers")


def logits(output, batch: int) -> torch.Tensor:
    """The model's output as a ``(batch, classes)`` tensor of scores."""
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != batch:
        raise ValueError(f"the model must return a (batch, classes) tensor of scores; got "
                         f"{describe(output)} for a batch of {batch}")
    return output
