import pytest

from sngan import config, config_files
from sngan.errors import UsageError


def test_bad_override_and_yaml(tmp_path):
    with pytest.raises(UsageError, match="must look like section.key=value"):
        config_files.apply_overrides({}, ["train.steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(UsageError, match="cannot parse config .* at line"):
        config.load(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        config.load(scalar)


def test_bundled_configs_by_bare_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, file = config.load("cifar_sn.yaml")
    assert file.parent.name == "configs"
    assert (cfg.data.name, cfg.model.arch, cfg.loss.name, cfg.model.d_norm) == ("cifar10", "dcgan", "hinge", "sn")
    assert config.load("quickstart")[0].data.name == "synthetic"
    # a file in the working directory wins over the bundled one
    (tmp_path / "cifar_sn.yaml").write_text("train: {steps: 7}\n")
    assert config.load("cifar_sn.yaml")[0].train.steps == 7
    with pytest.raises(UsageError, match="not found .*bundled configs: .*quickstart"):
        config.load("nope.yaml")
