"""Targeted attacks: they stay within their budget and in [0, 1], and move the chosen class up."""
import pytest
import torch

from lib.kernels import adversarial


class LinearScores(torch.nn.Module):
    """Class k scores w_k . x: the gradient of every class is known and constant."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weights = torch.nn.Parameter(torch.randn(3, 16, generator=generator))

    def forward(self, x):
        return x.flatten(1) @ self.weights.T


def images(count=4):
    return torch.rand(count, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_the_attack_raises_the_target_within_the_budget():
    model, x = LinearScores().eval(), images()
    targets = torch.tensor([0, 1, 2, 0])
    attacked = adversarial.targeted_attack(model, x, targets, epsilon=0.1, steps=10)
    assert (attacked - x).abs().max() <= 0.1 + 1e-6
    assert attacked.min() >= 0 and attacked.max() <= 1
    before = model(x).softmax(1)[torch.arange(4), targets]
    after = model(attacked).softmax(1)[torch.arange(4), targets]
    assert (after > before).all()
    assert not attacked.requires_grad


def test_a_large_budget_makes_a_linear_model_answer_the_target():
    model, x = LinearScores().eval(), images()
    targets = torch.tensor([2, 2, 1, 1])
    attacked = adversarial.targeted_attack(model, x, targets, epsilon=1.0, steps=40)
    assert torch.equal(model(attacked).argmax(1), targets)


def test_the_attack_runs_under_inference_mode_and_checks_its_inputs():
    model, x = LinearScores().eval(), images(2)
    with torch.inference_mode():
        attacked = adversarial.targeted_attack(model, x, [0, 1], epsilon=0.05, steps=2)
    assert attacked.shape == x.shape
    with pytest.raises(ValueError, match="one class per image"):
        adversarial.targeted_attack(model, x, [0, 1, 2])
    with pytest.raises(ValueError, match="epsilon must be positive"):
        adversarial.targeted_attack(model, x, [0, 1], epsilon=0)
    with pytest.raises(ValueError, match="0..2 for this model"):
        adversarial.targeted_attack(model, x, [0, 5])
    with pytest.raises(ValueError, match="training mode"):
        adversarial.targeted_attack(LinearScores(), x, [0, 1])
