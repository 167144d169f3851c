"""sngan.studies.sweep_spec: spec expansion into cells, the bundled paper grids, bad specs."""

from pathlib import Path

import pytest

from sngan.errors import UsageError
from sngan.studies import sweep_spec
from conftest import expand_spec, spec_file


def test_table1_grid_is_the_papers(tmp_path):
    s = expand_spec(sweep_spec.find_spec("cifar10_table1"), out=tmp_path / "t1")
    assert len(s.cells) == 24 and s.axes == {"setting": list("ABCDEF"), "method": ["SN", "BN", "none", "WGAN-GP"]}
    assert [c.name for c in s.cells[:5]] == ["A-SN", "A-BN", "A-none", "A-WGAN-GP", "B-SN"]  # first axis slowest
    paper = {"A": (1e-4, 0.5, 0.9, 5), "B": (1e-4, 0.5, 0.999, 1), "C": (2e-4, 0.5, 0.999, 1),
             "D": (1e-3, 0.5, 0.9, 5), "E": (1e-3, 0.5, 0.999, 5), "F": (1e-3, 0.9, 0.999, 5)}
    for c in s.cells:
        o = c.cfg.optim
        assert (o.lr_g, o.beta1, o.beta2, o.n_dis) == paper[c.axes["setting"]] and o.lr_d == o.lr_g
        assert c.cfg.model.arch == "dcgan" and c.cfg.train.steps == 100_000 and c.cfg.train.batch_size == 64
        assert c.cfg.eval.every and c.cfg.eval.ref == "cifar10-train"
        assert (c.cfg.eval.num_samples, c.cfg.eval.ref_images) == (5_000, 10_000)  # the paper's protocol
        method = c.axes["method"]
        assert c.cfg.loss.name == ("wasserstein" if method == "WGAN-GP" else "standard")
        assert c.cfg.model.d_norm == {"SN": "sn", "BN": "bn", "none": "none", "WGAN-GP": "none"}[method]
        assert c.cfg.out.root == str(tmp_path / "t1" / "cells") and c.cfg.out.name == c.name
    wgan = next(c for c in s.cells if c.name == "A-WGAN-GP")
    assert wgan.cfg.loss.gp_weight == 10


def test_dcgan_comparison_and_quickstart_specs():
    s = expand_spec(sweep_spec.find_spec("cifar10_dcgan_norms"))
    assert [c.name for c in s.cells] == ["sn", "bn", "none"]
    for c in s.cells:
        o = c.cfg.optim
        assert (o.lr_g, o.lr_d, o.beta1, o.beta2, o.n_dis) == (1e-4, 4e-4, 0.5, 0.999, 1)
        assert c.cfg.model.d_norm == c.name and c.cfg.data.name == "cifar10"
    s = expand_spec(sweep_spec.find_spec("quickstart_2x2"))
    assert [c.name for c in s.cells] == ["sn-hinge", "sn-standard", "none-hinge", "none-standard"]
    assert s.folder == Path("runs/sweeps/quickstart_2x2")  # deterministic: a re-run finds it again


def test_extra_cells_bundles_and_scalar_labels(tmp_path):
    path = spec_file(tmp_path, """
base: quickstart
set: {train: {steps: 7}, optim.n_dis: 3}
axes:
  opt:
    slow: {optim: {lr_g: 1.0e-5, lr_d: 2.0e-5}}
    fast: {optim.lr_g: 1.0e-3}
  train.seed: [0, 1]
extra:
  gp: {opt: fast, loss.name: wasserstein, model.d_norm: none}
  seed9: {train.seed: 9}
""")
    s = expand_spec(path, ["train.steps=5"])
    assert [c.name for c in s.cells] == ["slow-seed0", "slow-seed1", "fast-seed0", "fast-seed1", "gp", "seed9"]
    slow = s.cells[1].cfg
    assert (slow.optim.lr_g, slow.optim.lr_d, slow.optim.n_dis, slow.train.seed) == (1e-5, 2e-5, 3, 1)
    assert slow.train.steps == 5  # --set applies on top of the spec's set
    gp = s.cells[4]
    assert gp.axes == {"opt": "fast", "train.seed": "—"}
    assert (gp.cfg.loss.name, gp.cfg.model.d_norm, gp.cfg.optim.lr_g) == ("wasserstein", "none", 1e-3)
    assert s.cells[5].axes == {"opt": "—", "train.seed": "seed9"} and s.cells[5].cfg.train.seed == 9


@pytest.mark.parametrize("text, fragment", [
    ("base: quickstart\naxes: {model.d_norm: [sn]}\nbogus: 1", "unknown sweep spec key 'bogus'"),
    ("axes: {model.d_norm: [sn]}", "needs 'base: CONFIG'"),
    ("base: quickstart", "has no cells"),
    ("base: quickstart\naxes: {model.d_norm: []}", "non-empty list"),
    ("base: quickstart\naxes: {o: {A: 3}}", "bundle 'A' must be a mapping"),
    ("base: quickstart\naxes: {o: {A: {optim.lr_gg: 1}}}", "sweep cell 'A': unknown config key 'optim.lr_gg'; did you mean 'optim.lr_g'?"),
    ("base: quickstart\naxes: {model.d_norm: [sn, ln]}", "sweep cell 'ln': config key 'model.d_norm' is 'ln'"),
    ("base: quickstart\naxes: {o: {A: {optim.n_dis: 1}}}\nextra: {x: {o: B}}", "axis 'o' has no label 'B'"),
    ("base: quickstart\naxes: {a: {x: {train.seed: 1}}}\nextra: {x: {train.seed: 2}}", "get the same folder name 'x'"),
    ("base: no_such_config\naxes: {model.d_norm: [sn]}", "config file 'no_such_config' not found"),
    ("base: quickstart\naxes: [1, 2]", "must map axis names"),
])
def test_bad_specs_are_one_line_errors(tmp_path, text, fragment):
    with pytest.raises(UsageError) as e:
        expand_spec(spec_file(tmp_path, text))
    assert fragment in str(e.value) and "\n" not in str(e.value)
