from sngan.metrics.fid_result import format_result, is_name, metric_name


def test_metric_names():
    assert metric_name(10_000, "cifar10-train") == "fid10k_cifar10-train"
    assert metric_name(50_000, "stl10-unlabeled") == "fid50k_stl10-unlabeled"
    assert metric_name(500, "cifar10-test") == "fid500_cifar10-test"
    assert metric_name(1500, "some/folder") == "fid1500_custom"
    assert metric_name(5000, "cifar10-train", 10_000) == "fid5k_cifar10-train10k"  # the paper's protocol
    assert metric_name(5000, "some/folder", 10_000) == "fid5k_custom"
    assert is_name(50_000) == "is50k" and is_name(10) == "is10"
    assert metric_name(5000, "cifar10-train", 10_000, "kid") == "kid5k_cifar10-train10k"
    assert metric_name(10_000, "some/folder", 0, "recall") == "recall10k_custom"


def test_metric_names_state_the_reference_images_used():
    """The split's name alone means all of its official images; anything else carries its count: a
    partial copy on disk (1,017 of CIFAR-10's 10,000 test images), or the first N asked for."""
    assert metric_name(1000, "cifar10-test", 1017) == "fid1k_cifar10-test1017"
    assert metric_name(1000, "cifar10-test", 10_000) == "fid1k_cifar10-test"
    assert metric_name(5000, "cifar10-train", 50_000) == "fid5k_cifar10-train"
    assert metric_name(5000, "stl10-train", 5000, "kid") == "kid5k_stl10-train"
    assert metric_name(5000, "stl10-unlabeled", 4000, "precision") == "precision5k_stl10-unlabeled4k"
    assert metric_name(5000, "some/folder", 12) == metric_name(5000, "some/stats.npz", None) == "fid5k_custom"


def test_format_result_states_the_protocol():
    text = format_result({
        "metric": "fid10k_cifar10-train", "fid": 24.3137, "num_gen": 10000, "num_ref": 50000,
        "ref": "cifar10-train", "split": "train", "resolution": 32, "ref_cached": True, "source": "G.pt",
        "detector": "pytorch-fid-inception-2015-12-05", "weights": "w.pth",
        "is_metric": "is10k", "is_mean": 8.2, "is_std": 0.1, "is_splits": 10, "seconds": 1.0})
    lines = text.splitlines()
    assert lines[0] == "fid10k_cifar10-train = 24.31"
    assert "10000 generated" in lines[1] and "50000 reference" in lines[1] and "train split at 32px" in lines[1]
    assert "pytorch-fid-inception-2015-12-05" in lines[2]
    assert lines[3] == ("  is10k = 8.20 ± 0.10 (IS over 10000 samples in 10 splits of 1000; the paper's IS is "
                        "over 50,000 samples in 10 splits of 5,000)")


def test_format_result_states_unequal_is_splits():
    text = format_result({"metric": "fid25_custom", "fid": 3.0, "num_gen": 25, "num_ref": 12, "ref": "ref/",
                          "source": "gen/", "detector": "d", "weights": "w.pth",
                          "is_metric": "is25", "is_mean": 1.5, "is_std": 0.1, "is_splits": 10})
    assert "(IS over 25 samples in 10 splits of 2-3; " in text  # not "of 2": five splits hold 3


def test_format_result_says_why_is_is_unavailable():
    text = format_result({
        "metric": "fid10_custom", "fid": 3.0, "num_gen": 10, "num_ref": 12, "ref": "ref/", "source": "gen/",
        "detector": "pytorch-fid-inception-custom-12345678", "weights": "zero-fc.pth",
        "is": None, "is_note": "the classifier (fc) of 'zero-fc.pth' is all zeros, a placeholder"})
    assert [line for line in text.splitlines() if "IS" in line or "is1" in line] == [
        "  IS unavailable: the classifier (fc) of 'zero-fc.pth' is all zeros, a placeholder"]
