"""How an activation-maximisation image is parameterised: what the optimiser moves.

``"pixel"``: one parameter per pixel and channel, the image its sigmoid; ``"fourier"``: the
image's Fourier coefficients scaled by ``1 / f**decay``, the image the sigmoid of their inverse
transform; ``"clamped"``: the pixels themselves, clipped to [0, 1] after every step. Each
image object is called for the current image and ``project()``-ed after each step.
"""
import numbers

import torch

PARAMETERISATIONS = ("pixel", "fourier", "clamped")


class PixelImage:
    """The image is ``sigmoid(param)``, one parameter per pixel and channel."""

    def __init__(self, logits):
        self.param = logits.detach().clone().requires_grad_(True)

    def __call__(self):
        return torch.sigmoid(self.param)

    def project(self):
        pass


class ClampedImage:
    """The image is ``param`` itself, clipped to [0, 1] after every step (projection)."""

    def __init__(self, pixels):
        self.param = pixels.detach().clone().requires_grad_(True)

    def __call__(self):
        return self.param

    @torch.no_grad()
    def project(self):
        self.param.clamp_(0, 1)


class FourierImage:
    """The image is ``sigmoid(irfft2(param * scale))`` with ``scale = 1 / max(f, 1/n)**decay``.

    ``f`` is the frequency in cycles per pixel and ``n`` the longer side; with the orthonormal
    transform the constant component moves the image about as much as a pixel parameter does.
    ``param`` holds the real and imaginary parts of the (unscaled) coefficients.
    """

    def __init__(self, coefficients, size, decay):
        self.size = tuple(size)
        self.scale = spectrum_scale(self.size, decay, coefficients.device)
        self.param = torch.view_as_real(coefficients).detach().clone().requires_grad_(True)

    def __call__(self):
        spectrum = torch.view_as_complex(self.param) * self.scale
        return torch.sigmoid(torch.fft.irfft2(spectrum, s=self.size, norm="ortho"))

    def project(self):
        pass


def random_image(param, decay, shape, std, generator, device):
    """A parameterised image whose parameters start as N(0, std^2) noise."""
    if param == "pixel":
        return PixelImage((torch.randn(shape, generator=generator) * std).to(device))
    if param == "clamped":
        start = 0.5 + torch.randn(shape, generator=generator) * std
        return ClampedImage(start.clamp(0, 1).to(device))
    noise = torch.randn((*shape[:-1], shape[-1] // 2 + 1, 2), generator=generator) * std
    return FourierImage(torch.view_as_complex(noise).to(device), shape[-2:], decay)


def image_from(param, decay, images):
    """A parameterised image equal to ``images`` (strictly inside (0, 1) for the sigmoid)."""
    if param == "clamped":
        return ClampedImage(images)
    logits = torch.logit(images)
    if param == "pixel":
        return PixelImage(logits)
    size = images.shape[-2:]
    spectrum = torch.fft.rfft2(logits, norm="ortho")
    return FourierImage(spectrum / spectrum_scale(size, decay, images.device), size, decay)


def check_param(param, decay):
    if param not in PARAMETERISATIONS:
        raise ValueError(f"param must be one of {', '.join(map(repr, PARAMETERISATIONS))}; "
                         f"got {param!r}")
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not decay >= 0:
        raise ValueError(f"decay must be a non-negative number; got {decay!r}")
    return float(decay)


def spectrum_scale(size, decay, device):
    height, width = size
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    frequency = torch.sqrt(fy ** 2 + fx ** 2).clamp_min(1.0 / max(height, width))
    return frequency.pow(-decay)
