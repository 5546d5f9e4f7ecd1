"""Does an image optimised on one network convince another? Transfer of activation-maximisation
images beside the baselines that any such claim needs.

Every case is one image and one target class. A *synthesised* image (class images, fooling
images, adversarial images) was made on a source network; its case records the probability of
the target under the source (``p_source``) and under every other network (``p_other``, one row
per other network). A *real* image was made on no network; its ``p_other`` is the mean of the
networks' probabilities of the target and ``p_source`` is NaN. Real images give the two
references: images of the target class (what a real member scores) and images of another class
(what the networks give the target when it is wrong).
"""
import math

import pandas as pd
import torch

from ..kernels import paired, unpaired
from . import models

COLUMNS = ("kind", "source", "other", "target", "p_source", "p_other")


def target_probabilities(model, images, targets) -> torch.Tensor:
    """``model``'s probability of each image's target class: a CPU float64 tensor."""
    targets = torch.as_tensor(targets, dtype=torch.long).flatten().cpu()
    if targets.numel() != images.shape[0]:
        raise ValueError(f"give one target per image ({images.shape[0]}); "
                         f"got {targets.numel()}")
    probabilities = models.predict_proba(model, images).double().cpu()
    return probabilities[torch.arange(len(targets)), targets]


def synthesised_records(kind: str, networks: dict, images_by_source: dict,
                        targets_by_source: dict) -> pd.DataFrame:
    """Cases of images made on a source network: ``images_by_source[name]`` on ``networks[name]``
    for the targets ``targets_by_source[name]``, each scored by its source and by every other
    network."""
    unknown = set(images_by_source) - set(networks)
    if unknown:
        raise ValueError(f"images made on unknown network(s) {sorted(unknown)}; "
                         f"networks: {sorted(networks)}")
    rows = []
    for source, images in images_by_source.items():
        targets = targets_by_source[source]
        scored = {name: target_probabilities(net, images, targets)
                  for name, net in networks.items()}
        for other in networks:
            if other == source:
                continue
            rows += [dict(kind=kind, source=source, other=other, target=int(t),
                          p_source=scored[source][i].item(), p_other=scored[other][i].item())
                     for i, t in enumerate(torch.as_tensor(targets).tolist())]
    return pd.DataFrame(rows, columns=COLUMNS)


def real_records(kind: str, networks: dict, images, targets) -> pd.DataFrame:
    """Cases of real images: ``p_other`` is the mean over ``networks`` of the probability of
    each image's target; the image was made on no network, so ``p_source`` is NaN."""
    scored = torch.stack([target_probabilities(net, images, targets)
                          for net in networks.values()]).mean(0)
    targets = torch.as_tensor(targets).flatten().tolist()
    return pd.DataFrame([dict(kind=kind, source="none", other="all", target=int(t),
                              p_source=math.nan, p_other=scored[i].item())
                         for i, t in enumerate(targets)], columns=COLUMNS)


def wrong_classes(labels, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """One class other than its own for each image, uniformly at random (seeded)."""
    labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
    if num_classes < 2:
        raise ValueError(f"a wrong class needs at least two classes; got {num_classes}")
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift) % num_classes


def attack_starts(labels, num_classes: int, per_class: int, *, seed: int = 0):
    """For each target class, ``per_class`` images of other classes drawn without replacement
    (seeded): ``(indices, targets)``, two long tensors grouped by target."""
    labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
    generator = torch.Generator().manual_seed(seed)
    indices, targets = [], []
    for target in range(num_classes):
        others = (labels != target).nonzero().flatten()
        if len(others) < per_class:
            raise ValueError(f"class {target} has {len(others)} images of other classes; "
                             f"{per_class} were asked for")
        chosen = others[torch.randperm(len(others), generator=generator)[:per_class]]
        indices.append(chosen)
        targets.append(torch.full((per_class,), target, dtype=torch.long))
    return torch.cat(indices), torch.cat(targets)


def summary(records: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per kind (in order of appearance): the mean probability of the target on the source
    network and on the other network, each as ``mean [low, high]`` (95 % bootstrap over the
    cases; "–" where it does not apply), and the number of cases."""
    rows = {}
    for kind, cases in records.groupby("kind", sort=False):
        rows[kind] = {"on the network it was made on": _cell(cases["p_source"], n_boot, seed),
                      "on the other network": _cell(cases["p_other"], n_boot, seed),
                      "cases": len(cases)}
    return pd.DataFrame(rows).T


def compare(records: pd.DataFrame, kind: str, baselines, *, n_boot: int = 10000,
            seed: int = 0) -> pd.DataFrame:
    """``kind`` against each baseline kind on the other network's probability: the difference
    of the means, its bootstrap interval (the two sets resampled separately: they share no
    images), Bonferroni-adjusted over the baselines, and the verdict."""
    baselines = list(baselines)
    missing = [k for k in [kind, *baselines] if k not in set(records["kind"])]
    if missing:
        raise ValueError(f"no cases of kind(s) {missing}; kinds: {list(records['kind'].unique())}")
    level = 1 - 0.05 / len(baselines)
    first = torch.tensor(records.loc[records["kind"] == kind, "p_other"].to_numpy())
    rows = {}
    for baseline in baselines:
        second = torch.tensor(records.loc[records["kind"] == baseline, "p_other"].to_numpy())
        result = unpaired.difference_of_means(first, second, n_boot=n_boot, level=level,
                                              seed=seed)
        rows[baseline] = {"difference": result.difference, "CI low": result.ci_low,
                          "CI high": result.ci_high, "verdict": result.verdict}
    return pd.DataFrame(rows).T.infer_objects().rename_axis(f"{kind} minus")


def by_class(records: pd.DataFrame, kind: str, classes) -> pd.Series:
    """The mean probability the other network gives each target class to images of ``kind``."""
    cases = records[records["kind"] == kind]
    means = cases.groupby("target")["p_other"].mean()
    return pd.Series({name: means.get(k, math.nan) for k, name in enumerate(classes)},
                     name=kind)


def verdict_phrases(table: pd.DataFrame) -> dict:
    """Each row's verdict of :func:`compare` as it reads in a sentence."""
    return {baseline: paired.phrase(word) for baseline, word in table["verdict"].items()}


def _cell(values, n_boot, seed):
    mean, low, high = unpaired.mean_interval(torch.tensor(values.to_numpy()), n_boot=n_boot,
                                             seed=seed)
    if math.isnan(mean):
        return "–"
    if math.isnan(low):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"
