import pytest
import torch

from sngan.data.batches import Batches
from sngan.errors import SnganError


def test_batches_range_and_epochs():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    b = Batches(images, batch_size=4, seed=0, device="cpu")
    seen = [b.next()[0] for _ in range(2)]  # epoch 0 holds two full batches of 4 (tail of 2 dropped)
    assert all(x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32 for x in seen)
    ids = torch.cat([((x[:, 0, 0, 0] + 1) * 127.5).round() for x in seen]).long().tolist()
    assert len(set(ids)) == 8
    b.next()
    assert b.state_dict()["epoch"] == 1


def test_batches_resume_exactly():
    images = torch.randint(0, 255, (50, 3, 4, 4), dtype=torch.uint8)
    a = Batches(images, 8, seed=3, device="cpu")
    for _ in range(9):
        a.next()
    b = Batches(images, 8, seed=3, device="cpu")
    b.load_state_dict(a.state_dict())
    for _ in range(12):
        assert torch.equal(a.next()[0], b.next()[0])


def test_batches_shard_the_global_batch_across_ranks():
    images = torch.randint(0, 255, (40, 3, 4, 4), dtype=torch.uint8)
    whole = Batches(images, 8, seed=1, device="cpu")
    ranks = [Batches(images, 4, seed=1, device="cpu", rank=r, world=2) for r in range(2)]
    for _ in range(7):
        assert torch.equal(whole.next()[0], torch.cat([r.next()[0] for r in ranks]))


def test_batch_larger_than_data():
    with pytest.raises(SnganError, match="larger than the data set"):
        Batches(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), 8, 0, "cpu")
