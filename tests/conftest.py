import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fid_fixtures import *  # noqa: E402,F401,F403

torch.set_num_threads(2)


def tiny_config(tmp_path: Path, **sections) -> dict:
    """Plain config data for a tiny, fast CPU run on the synthetic set; `sections` override."""
    cfg = {
        "data": {"name": "synthetic", "resolution": 32, "num_images": 256},
        "model": {"arch": "dcgan", "g_ch": 4, "d_ch": 4, "z_dim": 16},
        "train": {"batch_size": 8, "steps": 4, "log_every": 2, "sample_every": 2,
                  "checkpoint_every": 2, "device": "cpu", "sample_grid": 4},
        "out": {"root": str(tmp_path / "runs")},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


@pytest.fixture
def tiny(tmp_path):
    """`tiny(section={key: value}, ...)` -> config data for a tiny CPU run writing under tmp_path."""
    return lambda **sections: tiny_config(tmp_path, **sections)
