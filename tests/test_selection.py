"""Reproducible picks of test images by class and outcome."""
import pytest
import torch

from lib.ultrasound import selection

LABELS = torch.tensor([0, 1, 2, 1, 2, 1, 2, 2, 1, 0])
CORRECT = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 0, 1]).bool()


def test_groups_come_by_class_then_correct_before_wrong():
    chosen = selection.by_class_and_outcome(LABELS, CORRECT, [1, 2], 1, seed=0)
    groups = [(LABELS[i].item(), CORRECT[i].item()) for i in chosen]
    assert groups == [(1, True), (1, False), (2, True), (2, False)]


def test_a_group_is_a_seeded_random_subset_and_a_short_group_gives_what_it_has():
    everything = selection.by_class_and_outcome(LABELS, CORRECT, [1], 10, seed=3)
    assert sorted(everything) == [1, 3, 5, 8]
    assert selection.by_class_and_outcome(LABELS, CORRECT, [1], 10, seed=3) == everything
    seeds = {tuple(selection.by_class_and_outcome(LABELS, CORRECT, [2], 1, seed=s))
             for s in range(20)}
    assert len(seeds) > 1  # another seed, another pick
    with pytest.raises(ValueError, match="vectors of one length"):
        selection.by_class_and_outcome(LABELS, CORRECT[:3], [1], 1)
    with pytest.raises(ValueError, match="count must be a positive integer"):
        selection.by_class_and_outcome(LABELS, CORRECT, [1], 0)


def test_first_per_class_interleaves_the_classes_in_order():
    chosen = selection.first_per_class(LABELS, [1, 2], 3)
    assert chosen.tolist() == [1, 2, 3, 4, 5, 6]
    assert selection.first_per_class(LABELS, [2, 0], 2).tolist() == [2, 0, 4, 9]
    with pytest.raises(ValueError, match="class 0 has 2 images, fewer than the 3"):
        selection.first_per_class(LABELS, [1, 0], 3)
