import pytest

from sngan import config, config_files
from sngan.errors import UsageError


def test_defaults_are_the_users():
    cfg = config.from_dict({})
    o = cfg.optim
    assert (o.lr_g, o.lr_d, o.beta1, o.beta2) == (1e-4, 4e-4, 0.5, 0.999)
    assert cfg.model.d_norm == "sn" and cfg.model.sn_iters == 1 and cfg.model.z_dim == 128
    assert cfg.train.batch_size == 64 and cfg.train.steps == 100_000


@pytest.mark.parametrize("data, message", [
    ({"optim": {"lr_gg": 1}}, "unknown config key 'optim.lr_gg'; did you mean 'optim.lr_g'?"),
    ({"optimm": {}}, "unknown config key 'optimm'; did you mean 'optim'?"),
    ({"train": {"batch_size": "big"}}, "config key 'train.batch_size' must be int, got 'big'"),
    ({"train": {"batch_size": 0}}, "config key 'train.batch_size' must be >= 1, got 0"),
    ({"optim": {"lr_d": 0}}, "config key 'optim.lr_d' must be > 0, got 0.0"),
    ({"optim": {"lr_d": -1e-4}}, "must be > 0"),
    ({"train": {"steps": -5}}, "config key 'train.steps' must be >= 1"),
    ({"model": {"d_norm": "spectral"}}, "config key 'model.d_norm' is 'spectral'; valid choices: sn, bn, none"),
    ({"model": {"arch": "vit"}}, "valid choices: dcgan, resnet"),
    ({"loss": "wgan"}, "config key 'loss.name' is 'wgan'; valid choices: hinge, standard"),
    ({"data": {"name": "mnist"}}, "valid choices: cifar10, folder, npz, stl10, synthetic"),
    ({"data": {"resolution": 36}}, "multiple of 8"),
    ({"train": {"deterministic": "yes"}}, "must be bool"),
    ({"model": 3}, "config section 'model.' must be a mapping"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(UsageError) as e:
        config.from_dict(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_int_to_float_and_yaml_exponent_strings():
    cfg = config.from_dict({"optim": {"lr_g": 1, "lr_d": "2e-4"}})
    assert cfg.optim.lr_g == 1.0 and cfg.optim.lr_d == 2e-4


def test_loss_shorthand_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss: standard\ntrain:\n  steps: 10\n")
    cfg, file = config.load(path, ["train.steps=20", "optim.lr_d=1e-3", "loss.name=hinge", "model.d_norm=bn"])
    assert cfg.train.steps == 20 and cfg.optim.lr_d == 1e-3 and cfg.loss.name == "hinge"
    assert cfg.model.d_norm == "bn" and cfg.out.name == "c" and file == path


def test_every_bundled_config_is_valid():
    names = config_files.list_bundled()
    assert len(names) >= 26
    for name in names:
        cfg, _ = config.load(name)
        assert cfg.out.name == name


def test_committed_grid_matches_generator():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_configs.py"
    spec = importlib.util.spec_from_file_location("make_configs", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = mod.render_all()
    # {cifar10, stl10} x {dcgan, resnet} x {sn, bn, none} x {hinge, standard}, and the conditional one
    assert len(files) == 25 and "cifar10_resnet_sn_hinge_projection.yaml" in files
    for name, text in files.items():
        assert (mod.CONFIGS / name).read_text() == text, f"{name} differs; run scripts/make_configs.py"
    doc = mod.REFERENCE.read_text()
    assert mod.render_reference(doc) == doc, "docs/configuration.md is stale; run scripts/make_configs.py"


def test_reference_covers_every_key():
    table = config.reference()
    for section, values in config.to_dict(config.Config()).items():
        for key in values:
            assert f"| `{section}.{key}` |" in table
    assert "| `model.init` | `auto` |" in table and "| `data.download` | `true` |" in table


def test_dump_round_trips():
    cfg = config.from_dict({"model": {"d_norm": "none"}, "loss": "standard"})
    import yaml
    assert config.from_dict(yaml.safe_load(config.dump(cfg))) == cfg


def test_every_choice_has_an_implementation_and_no_more():
    """The config names the choices; each registry must implement exactly those names, or a
    valid config would fail at run time (or an implementation would be unreachable)."""
    from sngan.data import datasets
    from sngan.models import networks
    from sngan.training import losses, nonfinite

    for registry, implemented in (("datasets", datasets.DATASETS), ("archs", networks.ARCHS),
                                  ("d_norms", networks.D_NORMS), ("losses", losses.LOSSES),
                                  ("nonfinite_policies", nonfinite.NONFINITE)):
        assert set(config.choices(registry)) == set(implemented), registry
