"""A learned reward for the digits rung: a small CNN classifier and its class log-probability.

:class:`DigitClassifier` maps (n, 1, 8, 8) model-space digits (pixels in [−1, 1]) to 10 logits.
:func:`train_digit_classifier` trains it on the fixed training part of :func:`cda_lite.digits.data.split`
(cached like the pretrained models) and stores the held-out accuracy on the model.
:class:`ClassLogProb` turns it into a differentiable reward r(x) = log p(digit | x).

Caveat: the classifier sees *clean data* only. Used on generated samples it is a judge outside its
training distribution: a sample it scores confidently need not look like a digit to a person, and a
reward that is pushed hard (alignment) can find inputs it misjudges. Small Gaussian pixel noise during
training makes it less brittle; the chapters still check pictures, not just scores. Chapters 8 and 9.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from cda_lite.checkpoint import atomic_save
from cda_lite.digits.data import N_CLASSES, _check_images, load_digits, split
from cda_lite.pretrained import cache_dir
from cda_lite.profile import pick


class DigitClassifier(nn.Module):
    """conv(1→16) → conv(16→32) → pool to 4×4 → conv(32→64) → global mean → linear(64→10)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.width = width
        w = width
        self.c1 = nn.Conv2d(1, w, 3, padding=1)
        self.c2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.c3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1)
        self.head = nn.Linear(4 * w, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x)
        h = F.silu(self.c1(x))
        h = F.max_pool2d(F.silu(self.c2(h)), 2)
        h = F.silu(self.c3(h)).mean((2, 3))
        return self.head(h)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p(class | x), shape (n, 10)."""
        return F.log_softmax(self(x), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of each image, (n,) long."""
        return self(x).argmax(1)


@torch.no_grad()
def accuracy(classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose most probable class is their label."""
    return float((classifier(x).argmax(1) == labels).float().mean())


def _key(arch: dict, steps: int, seed: int, batch_size: int, lr: float, noise: float) -> str:
    payload = json.dumps({"arch": arch, "steps": steps, "seed": seed, "batch": batch_size, "lr": lr,
                          "noise": noise, "data": "sklearn-digits-split0.2"}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_digit_classifier(steps: int | None = None, seed: int = 0, width: int = 16, batch_size: int = 128,
                           lr: float = 3e-3, noise: float = 0.1, cache: bool = True) -> DigitClassifier:
    """Train (or load from the cache) a :class:`DigitClassifier` on the training split.

    Cross-entropy, AdamW with cosine decay, Gaussian pixel noise of std ``noise`` (model-space units)
    added to each batch. ``steps`` defaults to ``pick(fast=600, full=2000)``. The held-out accuracy
    (on ``split()[1]``) is stored as ``.held_out_accuracy``. Returned in eval mode with gradients
    off for its parameters (it is a reward, not a trainee).
    """
    steps = pick(fast=600, full=2000) if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps: expected a positive number of training steps, got {steps}")
    x, y = load_digits(return_labels=True)
    tr, te = split()
    arch = {"cls": "DigitClassifier", "width": width}
    path = os.path.join(cache_dir(), "classifier", _key(arch, steps, seed, batch_size, lr, noise) + ".pt")
    torch.manual_seed(seed)
    model = DigitClassifier(width)
    if cache and os.path.exists(path):
        model.load_state_dict(torch.load(path, map_location="cpu"))
    else:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
        xtr, ytr = x[tr], y[tr]
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(xtr), (batch_size,), generator=gen)
            xb = xtr[idx] + noise * torch.randn(xtr[idx].shape, generator=gen)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if cache:
            atomic_save(model.state_dict(), path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.held_out_accuracy = accuracy(model, x[te], y[te])
    return model


class ClassLogProb:
    """The learned reward r(x) = log p(digit | x) of a classifier, on (n, 1, H, W) model-space digits.

    Differentiable in x (the classifier's own parameters are frozen). ``.name`` is ``"is_<digit>"``.
    """

    def __init__(self, classifier: nn.Module, digit: int):
        if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit < N_CLASSES:
            raise ValueError(f"digit: expected an integer class 0..{N_CLASSES - 1}, got {digit!r}")
        self.classifier, self.digit = classifier, int(digit)
        self.name = f"is_{digit}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x)
        return F.log_softmax(self.classifier(x), dim=1)[:, self.digit]

    def __repr__(self):
        return f"ClassLogProb({self.name})"


def class_frequencies(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Share of images the classifier assigns to each class, (10,) summing to 1."""
    pred = classifier.predict(x)
    return torch.bincount(pred, minlength=N_CLASSES).float() / len(pred)


__all__ = ["DigitClassifier", "train_digit_classifier", "ClassLogProb", "accuracy", "class_frequencies"]
