import numpy as np
import torch

from procedge.metrics import top1


def test_top1_counts_numpy_and_torch_batches_alike_and_an_unreadable_image_as_wrong():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32)
    labels = np.array([1, 0, 0])
    assert top1([(scores, labels)]) == 2 / 3
    assert top1([(torch.from_numpy(scores[:2]), torch.tensor([1, -1])), (torch.from_numpy(scores[2:]), torch.tensor([1]))]) == 2 / 3
    assert top1([]) == 0.0
