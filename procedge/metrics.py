"""Top-1 accuracy, the one count every evaluation shares (torch-free: numpy arrays or torch tensors alike)."""

from __future__ import annotations

from collections.abc import Iterable


def top1(batches: Iterable[tuple[object, object]]) -> float:
    """Share of correct top-1 predictions over (scores (B, classes), labels (B,)) batches; a label of -1 counts as wrong
    (an image that could not be read)."""
    correct = total = 0
    for scores, labels in batches:
        correct += int((scores.argmax(1) == labels).sum())
        total += len(labels)
    return correct / total if total else 0.0
