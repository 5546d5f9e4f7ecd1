"""Transfer cases of synthesised and real images, their summary and their comparison."""
import math

import pandas as pd
import pytest
import torch

from lib.ultrasound import am_transfer


class Fixed(torch.nn.Module):
    """Logits read from the first pixels: image i gets the probabilities stored in it."""

    def __init__(self, flip=False):
        super().__init__()
        self.flip = flip
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = x.flatten(1)[:, :3].log()
        return logits.flip(1) if self.flip else logits


def images_with(probabilities):
    x = torch.full((len(probabilities), 1, 2, 2), 0.25)
    x.view(len(probabilities), -1)[:, :3] = torch.tensor(probabilities)
    return x


NETWORKS = {"a": Fixed().eval(), "b": Fixed(flip=True).eval()}


def test_synthesised_cases_score_each_image_on_its_source_and_on_the_other_network():
    x = images_with([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    records = am_transfer.synthesised_records("made", NETWORKS, {"a": x}, {"a": [0, 2]})
    assert list(records.columns) == list(am_transfer.COLUMNS)
    assert records[["source", "other"]].drop_duplicates().values.tolist() == [["a", "b"]]
    assert records["p_source"].tolist() == pytest.approx([0.7, 0.6])
    assert records["p_other"].tolist() == pytest.approx([0.1, 0.1])  # b reads them reversed
    with pytest.raises(ValueError, match="unknown network"):
        am_transfer.synthesised_records("made", NETWORKS, {"c": x}, {"c": [0, 1]})


def test_real_cases_average_the_networks_and_have_no_source():
    x = images_with([[0.7, 0.2, 0.1]])
    records = am_transfer.real_records("real", NETWORKS, x, [0])
    assert records["p_other"].item() == pytest.approx((0.7 + 0.1) / 2)
    assert math.isnan(records["p_source"].item())


def test_wrong_classes_are_never_the_own_class_and_cover_the_others():
    labels = torch.arange(3).repeat(200)
    wrong = am_transfer.wrong_classes(labels, 3, seed=0)
    assert (wrong != labels).all()
    assert set(wrong[labels == 0].tolist()) == {1, 2}
    assert torch.equal(wrong, am_transfer.wrong_classes(labels, 3, seed=0))


def test_attack_starts_take_images_of_other_classes_per_target():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    indices, targets = am_transfer.attack_starts(labels, 3, 2, seed=1)
    assert targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert (labels[indices] != targets).all()
    assert len(set(indices[:2].tolist())) == 2  # without replacement
    with pytest.raises(ValueError, match="2 images of other classes; 3 were asked"):
        am_transfer.attack_starts(torch.tensor([0, 0, 1, 2]), 3, 3)


def records_of(kind, values):
    return pd.DataFrame({"kind": kind, "source": "a", "other": "b", "target": 0,
                         "p_source": 1.0, "p_other": values})


def test_summary_and_comparison_read_the_difference_of_the_sets():
    generator = torch.Generator().manual_seed(0)
    high = (0.8 + 0.1 * torch.rand(30, generator=generator)).tolist()
    low = (0.2 + 0.1 * torch.rand(40, generator=generator)).tolist()
    records = pd.concat([records_of("am", high), records_of("fooling", low),
                         records_of("copy", high)], ignore_index=True)
    table = am_transfer.summary(records, n_boot=500)
    assert list(table.index) == ["am", "fooling", "copy"]
    assert table.loc["am", "cases"] == 30
    assert table.loc["am", "on the other network"].startswith("0.85 [")
    compared = am_transfer.compare(records, "am", ["fooling", "copy"], n_boot=2000)
    assert compared.loc["fooling", "verdict"] == "higher"
    assert compared.loc["copy", "verdict"] == "indistinguishable"
    assert compared.loc["fooling", "difference"] == pytest.approx(
        sum(high) / 30 - sum(low) / 40)
    phrases = am_transfer.verdict_phrases(compared)
    assert phrases == {"fooling": "higher than", "copy": "not distinguishable from"}
    with pytest.raises(ValueError, match="no cases of kind"):
        am_transfer.compare(records, "am", ["missing"])


def test_by_class_means_per_target():
    records = pd.DataFrame({"kind": "am", "source": "a", "other": "b", "target": [0, 0, 2],
                            "p_source": 1.0, "p_other": [0.2, 0.4, 0.9]})
    means = am_transfer.by_class(records, "am", ["x", "y", "z"])
    assert means["x"] == pytest.approx(0.3) and math.isnan(means["y"])
    assert means["z"] == pytest.approx(0.9)
