"""sngan.models.sample: loading G from a checkpoint, and the seeded batches of samples behind FID."""

import pytest
import torch

from sngan import config
from sngan.errors import UsageError
from sngan.models import networks
from sngan.models.sample import generate_batches, load_generator
from sngan.runs import checkpoint
from conftest import train_run


def test_load_generator_chooses_ema_by_default(tiny, tmp_path):
    plain, _ = train_run(tiny(train={"steps": 1}), tmp_path, "plain")
    with_ema, _ = train_run(tiny(train={"steps": 1, "ema_decay": 0.5}), tmp_path, "ema")
    state = checkpoint.load(with_ema / "latest.pt")
    for ema, kind, key in ((None, "ema", "G_ema"), (True, "ema", "G_ema"), (False, "raw", "G")):
        G, _, got = load_generator(with_ema / "latest.pt", "cpu", ema)
        assert got == kind
        for k, v in G.state_dict().items():
            assert torch.equal(v, state[key][k])
    assert load_generator(plain / "latest.pt")[2] == "raw"
    with pytest.raises(UsageError, match="has no EMA generator"):
        load_generator(plain / "latest.pt", ema=True)


def test_class_balanced_samples_for_fid(conditional_run):
    G, cfg, _ = load_generator(conditional_run / "latest.pt")
    default = torch.cat(list(generate_batches(G, cfg, 7, 3, seed=0, device="cpu")))
    balanced = torch.cat(list(generate_batches(G, cfg, 7, 3, seed=0, device="cpu", labels=torch.arange(7) % 2)))
    squares = torch.cat(list(generate_batches(G, cfg, 7, 3, seed=0, device="cpu", labels=torch.zeros(7, dtype=torch.long))))
    assert torch.equal(default, balanced) and not torch.equal(default, squares)


def test_fid_samples_split_across_processes_are_the_single_process_set(tiny, tmp_path):
    cfg = config.from_dict(tiny())
    G, _ = networks.build(cfg.model, cfg.data.resolution)
    G.eval()
    whole = torch.cat(list(generate_batches(G, cfg, 10, 4, seed=3, device="cpu")))
    parts = [torch.cat(list(generate_batches(G, cfg, 10, 4, seed=3, device="cpu", share=(r, 3)))) for r in range(3)]
    assert torch.equal(whole, torch.cat(parts))
