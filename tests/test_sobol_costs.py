"""The cost table of Sobol maps: forward passes, predicted times and the table's layout."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from lib.kernels import sobol_costs, sobol_images

SWEEP = [(2, 4), (2, 8), (4, 4)]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(),
                         nn.Linear(2 * 8 * 8, 3)).eval()


def test_predicted_time_is_forwards_times_per_forward_plus_the_estimator():
    forwards = sobol_images.forward_passes(4, 8)
    assert forwards == 8 * (16 + 2)
    assert sobol_costs.predicted_seconds(4, 8, 3, 0.25, 1.5) == 3 * forwards * 0.25 + 1.5
    assert sobol_costs.predicted_seconds(4, 8, 3, 0.0, 1.5) == 1.5


def test_table_has_one_row_per_design_and_one_column_per_setting():
    estimator = {(2, 4): 0.6, (2, 8): 1.2, (4, 4): 3.0}
    table = sobol_costs.cost_table({"tiny CPU": 0.01, "tiny GPU": None}, SWEEP, 3,
                                   num_resamples=10, estimator=estimator, missing="no GPU")
    assert list(table.index) == SWEEP and list(table.index.names) == ["g", "N"]
    assert list(table.columns) == [*sobol_costs.COLUMNS, "tiny CPU (s per image)",
                                   "tiny GPU (s per image)"]
    assert table["regions"].tolist() == [4, 4, 16]
    assert table["forwards per image"].tolist() == [4 * 6, 8 * 6, 4 * 18]
    expected = [round(forwards * 0.01 + estimator[design] / 3, 2)
                for forwards, design in zip(table["forwards per image"], SWEEP)]
    assert table["tiny CPU (s per image)"].tolist() == expected
    assert (table["tiny GPU (s per image)"] == "no GPU").all()


def test_a_row_per_image_is_its_share_of_the_predicted_time():
    table = sobol_costs.cost_table({"net": 0.002}, [(4, 8)], 5, num_resamples=10,
                                   estimator={(4, 8): 2.0})
    predicted = sobol_costs.predicted_seconds(4, 8, 5, 0.002, 2.0)
    assert table.loc[(4, 8), "net (s per image)"] == round(predicted / 5, 2)


def test_unmeasured_settings_say_so_by_default():
    table = sobol_costs.cost_table({"gpu": None}, SWEEP, 2, num_resamples=10,
                                   estimator=dict.fromkeys(SWEEP, 0.0))
    assert (table["gpu (s per image)"] == "not measured").all()


def test_measured_estimator_and_forward_times_are_finite_and_leave_the_model_alone():
    model = tiny_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    image = torch.rand(1, 1, 8, 8)
    seconds = sobol_costs.seconds_per_forward(model, image, grid=2, count=4, device="cpu",
                                              blur_sigma=1.0)
    assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    estimate = sobol_costs.estimator_seconds(2, 4, 3, num_resamples=5, device="cpu")
    assert isinstance(estimate, float) and math.isfinite(estimate) and estimate >= 0
    table = sobol_costs.cost_table({"tiny CPU": seconds}, SWEEP, 3, num_resamples=5,
                                   device="cpu")
    assert isinstance(table, pd.DataFrame) and table.shape == (len(SWEEP), 3)
    assert (table["tiny CPU (s per image)"] >= 0).all()


def test_a_grid_that_does_not_divide_the_image_is_refused():
    with pytest.raises(ValueError, match="grid must be a positive integer that divides"):
        sobol_costs.seconds_per_forward(tiny_model(), torch.rand(1, 1, 8, 8), grid=3,
                                        count=2, device="cpu")
