"""sngan.runs: run-folder numbering, the lock, and the plots of a run folder."""

import pytest
from PIL import Image

from sngan import runs
from sngan.errors import SnganError
from conftest import train_run


def test_a_new_run_never_reuses_a_folder(tiny, tmp_path):
    first, _ = train_run(tiny(train={"steps": 1}), tmp_path, "same")
    second, _ = train_run(tiny(train={"steps": 1}), tmp_path, "same")
    assert first != second and first.name == "00000-same" and second.name == "00001-same"


def test_running_folder_is_locked(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    with runs.run_lock(run_dir):
        with pytest.raises(SnganError, match="in use by another sngan process"):
            with runs.run_lock(run_dir):
                pass


def test_run_folder_plots(tmp_path):
    """A run folder gets losses.png and sigmas.png, and fid.png only once FID is logged."""
    from sngan.runs import write_plots

    train = [{"step": s, "loss_d": 1.0, "loss_g": 0.5, "d_real": 0.1, "d_fake": -0.1, "sigma": {"fc": 1.0}}
             for s in (10, 20)]
    write_plots(tmp_path, train)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.png", "sigmas.png"]
    write_plots(tmp_path, train + [{"step": 20, "fid5k_train": 40.0}])
    for name in ("losses.png", "sigmas.png", "fid.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size == (800, 500)
