"""The book's map methods as ``explain(model, images)`` functions, for the sanity checks.

``lib.kernels.sanity`` re-initialises a network's layers from the output end down and asks
each method for its maps again; a method whose maps barely change explains the image, not
the network. Every method of the CNN chapters takes part (Grad-CAM, the gradient, the local
finite-difference map, the change image-specific AM makes, the Sobol' total-index map), with
one that ignores the network on purpose, an edge detector on the image, to show what an
insensitive method looks like. The maps explain a fixed class per image (in the chapter: the
true class), so that randomising the network cannot change the question asked.
"""
import torch
import torch.nn.functional as F

from ..kernels import sobol_images
from . import compare, models

METHODS = ("grad_cam", "gradient", "local_sensitivity", "am_change", "sobol_st", "edges")
TITLES = {**compare.TITLES, "sobol_st": "Sobol ST", "edges": "edge detector"}
# The stages of each network, from the input to the output, as module names inside
# ``UltrasoundCNN`` (VGG's blocks are runs of convolutions and batch norms in one Sequential).
_VGG_BLOCKS = {"block 1": (0, 1, 3, 4), "block 2": (7, 8, 10, 11),
               "block 3": (14, 15, 17, 18, 20, 21), "block 4": (24, 25, 27, 28, 30, 31),
               "block 5": (34, 35, 37, 38, 40, 41)}


def randomisation_steps(model: models.UltrasoundCNN) -> dict:
    """``{step: [module names]}`` for ``lib.kernels.sanity.cascading_randomization``: the
    head, then each stage of the network down to its first convolution."""
    if model.arch == "resnet18":
        return {"head": ["net.fc"], **{f"layer {k}": [f"net.layer{k}"] for k in (4, 3, 2, 1)},
                "stem": ["net.conv1", "net.bn1"]}
    steps = {"head": ["net.classifier"]}
    for name, indices in reversed(list(_VGG_BLOCKS.items())):
        steps[name] = [f"net.features.{i}" for i in indices]
    return steps


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of each image (channels averaged): ``N x 1 x H x W``."""
    gray = images.mean(dim=1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                         dtype=images.dtype, device=images.device)
    kernels = torch.stack([sobel, sobel.T])[:, None]
    edges = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return edges.pow(2).sum(dim=1, keepdim=True).sqrt()


def explainer(method: str, target: torch.Tensor, *, layer: str,
              settings: compare.MapSettings = compare.MapSettings(), grid: int = 4,
              N: int = 8, blur_sigma: float = sobol_images.DEFAULT_BLUR_SIGMA, seed: int = 0):
    """``explain(model, images) -> N x 1 x H x W`` maps of class ``target[i]`` of image ``i``
    by ``method`` (one of ``METHODS``). ``layer`` is the Grad-CAM layer; ``grid``, ``N`` and
    ``blur_sigma`` set the Sobol' map (a coarse one suffices to see whether it changes)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")

    def explain(model, images):
        if method == "edges":
            return edge_map(images)
        if method == "sobol_st":
            result = sobol_images.sobol_maps(model, images, target, grid=grid, N=N,
                                             blur_sigma=blur_sigma, num_resamples=10,
                                             seed=seed, show_progress=False)
            return result.to_image("ST", images.shape[-2:])
        return compare.explanation_maps(model, images, target, layer=layer,
                                        methods=[method], settings=settings, seed=seed,
                                        show_progress=False).maps[method]
    return explain


def cascade(model, images, target, methods=METHODS, *, settings=compare.MapSettings(),
            grid: int = 4, N: int = 8, seed: int = 0, show_progress: bool = True) -> dict:
    """``{method: lib.kernels.sanity.RandomizationResult}`` of the cascading randomisation of
    ``model`` (its stages from the head down) for every method."""
    from ..kernels import sanity

    layer = models.TARGET_LAYERS[model.arch]
    steps = randomisation_steps(model)
    return {method: sanity.cascading_randomization(
        model, explainer(method, target, layer=layer, settings=settings, grid=grid, N=N,
                         seed=seed), images, layers=steps, seed=seed, show_progress=show_progress)
        for method in methods}


# Mean Spearman correlation with the intact maps above which a map counts as unchanged.
UNCHANGED_SPEARMAN = 0.5


def whole_network_check(model, images, target, methods, *, settings=compare.MapSettings(),
                        grid: int = 4, N: int = 8, seed: int = 0,
                        threshold: float = UNCHANGED_SPEARMAN,
                        n_boot: int = 1000):
    """The last step of :func:`cascade` alone: every stage randomised at once, each method's
    maps compared with the intact ones (a :func:`final_similarity` table), for a chapter that
    ranks a method and must say whether its maps depend on the weights."""
    from ..kernels import sanity

    layer = models.TARGET_LAYERS[model.arch]
    every_stage = [name for names in randomisation_steps(model).values() for name in names]
    results = {method: sanity.cascading_randomization(
        model, explainer(method, target, layer=layer, settings=settings, grid=grid, N=N,
                         seed=seed), images, layers={"every stage": every_stage}, seed=seed,
        show_progress=False) for method in methods}
    return final_similarity(results, threshold=threshold, n_boot=n_boot, seed=seed)


def final_similarity(results: dict, *, threshold: float = UNCHANGED_SPEARMAN,
                     n_boot: int = 1000,
                     seed: int = 0):
    """Per method: the mean similarity to the intact maps once every layer is randomised,
    with its bootstrap interval, and the verdict: ``"insensitive"`` when the mean Spearman
    correlation stays above ``threshold``, else ``"changes"``. A pandas DataFrame."""
    import pandas as pd

    from ..kernels import sanity

    rows = []
    for method, result in results.items():
        table = sanity.summary(result, n_boot=n_boot, seed=seed)
        last = table[table["step"] == table["step"].max()].set_index("similarity")
        row = {"method": TITLES.get(method, method)}
        for measure in last.index:
            row[f"{measure}"] = last.loc[measure, "mean"]
            row[f"{measure} CI"] = (last.loc[measure, "ci_low"], last.loc[measure, "ci_high"])
        # a map that becomes constant (Grad-CAM's ReLU of a random layer) has changed
        row["verdict"] = "insensitive" if row["spearman"] > threshold else "changes"
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def data_randomisation(real, shuffled, images, target, methods, *,
                       settings=compare.MapSettings(), grid: int = 4, N: int = 8,
                       n_boot: int = 1000, seed: int = 0):
    """Per method: how alike the maps of the real network and of the same architecture
    trained on shuffled labels are (mean Spearman and SSIM over the images, with bootstrap
    intervals). A pandas DataFrame."""
    import pandas as pd

    from ..kernels import metrics, similarity

    layer = models.TARGET_LAYERS[real.arch]
    rows = []
    for method in methods:
        explain = explainer(method, target, layer=layer, settings=settings, grid=grid, N=N,
                            seed=seed)
        scores = similarity.compare_maps(explain(real, images), explain(shuffled, images))
        row = {"method": TITLES.get(method, method)}
        for measure, values in scores.items():
            stats = metrics.bootstrap_mean(values, n_boot=n_boot, seed=seed)
            row[measure], row[f"{measure} CI"] = stats["mean"], (stats["ci_low"],
                                                                stats["ci_high"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def correct_lesion_images(networks, test, count: int) -> torch.Tensor:
    """Indices of the first ``count`` images of ``test`` (a ``lib.data.BusiSplit``) with a
    lesion (benign or malignant) that every network of ``networks`` classifies correctly."""
    lesion = torch.isin(test.labels, torch.tensor([test.classes.index("benign"),
                                                   test.classes.index("malignant")],
                                                  device=test.labels.device))
    correct = lesion.clone()
    for network in networks:
        correct &= models.predict_logits(network, test.images).argmax(dim=1) == test.labels
    chosen = torch.nonzero(correct).flatten()[:count]
    if len(chosen) == 0:
        raise ValueError("no lesion image of this split is classified correctly by every "
                         "network")
    return chosen


def rounded(table, digits: int = 2):
    """``table`` as the page shows it: each measure and its interval in one column,
    ``"0.42 [0.31, 0.55]"`` (a dash where a map is constant), other columns as they are."""
    import math

    import pandas as pd

    def cell(value, interval):
        if isinstance(value, float) and math.isnan(value):
            return "— (constant map)"
        return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    shown = {}
    for column in table.columns:
        if column.endswith(" CI"):
            continue
        if f"{column} CI" in table.columns:
            name = {"spearman": "Spearman", "ssim": "SSIM"}.get(column, column)
            shown[name] = [cell(v, i) for v, i in zip(table[column], table[f"{column} CI"])]
        else:
            shown[column] = list(table[column])
    return pd.DataFrame(shown, index=table.index)


def _listed(rows) -> str:
    return "; ".join(rows) if rows else "none"


def verdict_words(final) -> dict:
    """The methods whose maps stay (``insensitive_methods``) or change
    (``sensitive_methods``) under full randomisation, as text naming the networks, from
    :func:`final_similarity` tables concatenated by network."""
    groups = {}
    for (network, method), verdict in final["verdict"].items():
        groups.setdefault(verdict, {}).setdefault(method, []).append(network)
    def words(verdict):
        return _listed([f"{method} ({', '.join(networks)})"
                        for method, networks in groups.get(verdict, {}).items()])
    return {"insensitive_methods": words("insensitive"), "sensitive_methods": words("changes")}


def data_verdicts(table, threshold: float) -> dict:
    """Which methods' maps of the real and the shuffled-label network are alike (mean
    Spearman above ``threshold``) and which differ, as text."""
    alike = table["spearman"] > threshold
    return {"data_similar_methods": _listed(list(table.index[alike])),
            "data_different_methods": _listed(list(table.index[~alike]))}


def shuffled_network_scores(network, run, test) -> dict:
    """The shuffled-label network's accuracy on the labels it memorised and on ``test``,
    and the test accuracy of always answering the test split's most frequent class."""
    predicted = models.predict_logits(network, test.images).argmax(dim=1)
    majority = torch.bincount(test.labels).max().item() / len(test.labels)
    return {"shuffled_train_accuracy": run.train_scores["accuracy"],
            "shuffled_test_accuracy": (predicted == test.labels).double().mean().item(),
            "majority_test_accuracy": majority}
