"""What a batch of Sobol maps of image regions says, in a few numbers per network.

Both functions take a ``lib.kernels.sobol_images.SobolMaps`` (indices of shape images x g x g)
and return a dict whose keys are the columns of the chapter's tables.
"""


def certainty(result) -> dict:
    """How sure the maps are: the largest total index of an image and the bootstrap
    half-widths (means over images and regions), the share of regions whose total index is
    above its half-width, and the sums of the indices per image (means over images)."""
    ST, ST_conf = result.ST.flatten(1), result.ST_conf.flatten(1)
    S1, S1_conf = result.S1.flatten(1), result.S1_conf.flatten(1)
    return {"largest ST per image (mean)": ST.max(dim=1).values.mean().item(),
            "ST interval half-width (mean)": ST_conf.mean().item(),
            "S1 interval half-width (mean)": S1_conf.mean().item(),
            "regions with ST > 0 (share)": (ST - ST_conf > 0).double().mean().item(),
            "sum of S1 per image (mean)": S1.sum(dim=1).mean().item(),
            "sum of ST per image (mean)": ST.sum(dim=1).mean().item()}


def interaction(result) -> dict:
    """How far the scores are from additive over the regions: the sum of the first-order
    indices per image (mean, lowest, highest) and the share of regions whose gap ST - S1
    exceeds the sum of the two half-widths."""
    first_order_sums = result.S1.flatten(1).sum(1)
    beyond = (result.ST - result.S1) > (result.ST_conf + result.S1_conf)
    return {"sum of S1 (mean over images)": first_order_sums.mean().item(),
            "sum of S1 (lowest image)": first_order_sums.min().item(),
            "sum of S1 (highest image)": first_order_sums.max().item(),
            "regions with ST − S1 beyond both intervals (share)":
                beyond.double().mean().item()}
