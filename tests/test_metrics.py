"""Metric maths and loaders, without real network weights (fast)."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionflow.metrics import feature_statistics, frechet_distance, frechet_distance_from_features
from fashionflow.metrics.i3d import InceptionI3d, tf_same_padding
from fashionflow.metrics.inception_score import as_probabilities, inception_score, load_c3d
from fashionflow.metrics.kid import kernel_inception_distance
from fashionflow.metrics.lpips import load_lpips
from fashionflow.metrics.paired import gaussian_window, psnr_per_frame, ssim_per_frame
from fashionflow.metrics.safe_pickle import UnsafePickleError, load_numpy_pickle


def random_spd(d, rng, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


# --- Fréchet distance -----------------------------------------------------------------------

def test_frechet_distance_matches_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.5, 2.0, 6), rng.uniform(0.5, 2.0, 6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()  # diagonal: per-axis
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    sigma = random_spd(6, rng)  # sigma2 = a * sigma1: tr = (1 - sqrt(a))^2 tr(sigma1)
    assert frechet_distance(mu1, sigma, mu1, 4.0 * sigma) == pytest.approx(np.trace(sigma), rel=1e-8)


def test_frechet_distance_from_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(1)
    cov1, cov2 = random_spd(3, rng), random_spd(3, rng)
    x = rng.multivariate_normal(np.zeros(3), cov1, size=200_000)
    y = rng.multivariate_normal(np.ones(3), cov2, size=200_000)
    exact = frechet_distance(np.zeros(3), cov1, np.ones(3), cov2)
    assert frechet_distance_from_features(x, y) == pytest.approx(exact, rel=0.02)


@pytest.mark.parametrize("n", [5, 300])  # 5 samples in 64 dims: singular covariances
def test_identical_sets_give_zero(n):
    features = np.random.default_rng(2).normal(size=(n, 64)) * 3.0
    mu, sigma = feature_statistics(features)
    scale = np.trace(sigma)
    assert frechet_distance(mu, sigma, mu, sigma) <= 1e-6 * scale


@pytest.mark.parametrize("n1, n2", [(5, 7), (40, 30), (200, 150)])  # below and above d = 32
def test_features_path_equals_sqrtm_path(n1, n2):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(n1, 32)), rng.normal(0.2, 1.3, size=(n2, 32))
    via_sqrtm = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert frechet_distance_from_features(x, y) == pytest.approx(via_sqrtm, rel=1e-6)
    assert frechet_distance_from_features(x, x) <= 1e-9 * np.trace(np.cov(x, rowvar=False))


def test_near_singular_covariances_stay_finite_and_real():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(50, rng, rank=4), random_spd(50, rng, rank=4)
    value = frechet_distance(np.zeros(50), s1, np.zeros(50), s2)
    assert np.isfinite(value) and value >= 0.0
    # the trace term lies between 0 (identical) and tr(s1) + tr(s2) (orthogonal supports)
    assert value <= np.trace(s1) + np.trace(s2) + 1e-6


def test_frechet_distance_rejects_mismatched_shapes_and_bad_features():
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="not usable"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


# --- KID, IS ---------------------------------------------------------------------------------

def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kernel_inception_distance(x, y, num_subsets=20, max_subset_size=200)
    near, _ = kernel_inception_distance(x, y + 0.3, num_subsets=20, max_subset_size=200)
    far, _ = kernel_inception_distance(x, y + 1.0, num_subsets=20, max_subset_size=200)
    assert abs(same) < 0.3 * near and near < far


def test_inception_score_extremes():
    uniform = np.full((40, 7), 1 / 7)
    assert inception_score(uniform, num_splits=4)[0] == pytest.approx(1.0)
    confident = np.eye(5)[np.arange(50) % 5]  # each split sees every class equally often
    mean, std = inception_score(confident, num_splits=2, seed=0)
    assert 4.0 < mean <= 5.0 + 1e-6
    logits = torch.randn(3, 5)
    assert torch.allclose(as_probabilities(logits), logits.double().softmax(-1))
    probs = logits.softmax(-1)
    assert torch.allclose(as_probabilities(probs), probs.double())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script / save in torch >= 2.10
def test_c3d_loads_torchscript_from_a_path_and_fails_clearly_without(tmp_path):
    with pytest.raises(FileNotFoundError, match="--c3d-weights"):
        load_c3d(None)
    with pytest.raises(FileNotFoundError, match="not found at"):
        load_c3d(tmp_path / "missing.pt")

    class TinyC3D(torch.nn.Module):  # the interface of c3d_ucf101.pt: [b, 3, 16, h, w] in [0, 255] -> [b, 101]
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 101)

        def forward(self, x):
            return self.head(x.mean(dim=(2, 3, 4)) / 255.0).softmax(-1)

    torch.jit.save(torch.jit.script(TinyC3D()), str(tmp_path / "c3d.pt"))
    out = load_c3d(tmp_path / "c3d.pt")(torch.rand(2, 3, 16, 32, 32) * 255)
    assert out.shape == (2, 101) and torch.allclose(out.sum(-1), torch.ones(2))


# --- SSIM, PSNR, LPIPS -----------------------------------------------------------------------

def test_ssim_and_psnr_of_identical_frames():
    frames = np.random.default_rng(5).integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    assert np.allclose(ssim_per_frame(frames, frames), 1.0)
    assert np.isinf(psnr_per_frame(frames, frames)).all()


def test_ssim_and_psnr_match_reference_formulas():
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, (1, 13, 12, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    w = gaussian_window().numpy()
    values = []
    for c in range(3):  # the valid region of a 13x12 image and an 11x11 window: 3x2 positions
        for i in range(3):
            for j in range(2):
                x, y = a[0, i:i + 11, j:j + 11, c], b[0, i:i + 11, j:j + 11, c]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy, cxy = (w * x * x).sum() - mx ** 2, (w * y * y).sum() - my ** 2, (w * x * y).sum() - mx * my
                c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    assert ssim_per_frame(a, b)[0] == pytest.approx(np.mean(values), rel=1e-9)
    assert psnr_per_frame(a, b)[0] == pytest.approx(10 * np.log10(255 ** 2 / ((a - b) ** 2).mean()))


def test_lpips_loads_the_two_weight_files_and_behaves_like_a_distance(tmp_path):
    with pytest.raises(FileNotFoundError, match="--lpips-backbone"):
        load_lpips(None, tmp_path / "alex.pth")
    torch.manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    backbone = {f"features.{i}.weight": torch.randn(s) * 0.05 for i, s in shapes.items()}
    backbone.update({f"features.{i}.bias": torch.zeros(s[0]) for i, s in shapes.items()})
    backbone.update({"classifier.1.weight": torch.zeros(2, 2)})  # torchvision files hold the classifier too
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(linear, tmp_path / "alex.pth")
    model = load_lpips(tmp_path / "alexnet.pth", tmp_path / "alex.pth")
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-6)
    assert (model(x, y) > 0).all() and torch.allclose(model(x, y), model(y, x), atol=1e-6)
    del linear["lin4.model.1.weight"]
    torch.save(linear, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match="lins.4.weight"):
        load_lpips(tmp_path / "alexnet.pth", tmp_path / "broken.pth")


# --- weight loading --------------------------------------------------------------------------

class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_numpy_only_unpickler_loads_arrays_and_refuses_everything_else(tmp_path):
    good = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.float32(2.0)}, "k": [1, "a"]}
    (tmp_path / "good.pkl").write_bytes(pickle.dumps(good))
    loaded = load_numpy_pickle(tmp_path / "good.pkl")
    assert np.array_equal(loaded["params"]["w"], good["params"]["w"]) and loaded["k"] == [1, "a"]

    touched = tmp_path / "touched"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"w": _Exploit(touched)}))
    with pytest.raises(UnsafePickleError, match="refusing to load .io.open."):
        load_numpy_pickle(tmp_path / "evil.pkl")
    assert not touched.exists()
    (tmp_path / "object.pkl").write_bytes(pickle.dumps({"w": np.array([1, "x"], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="dtype object"):
        load_numpy_pickle(tmp_path / "object.pkl")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_numpy_pickle(tmp_path / "missing.ckpt")


def test_tf_same_padding_matches_tensorflow():
    # TF "SAME": out = ceil(in / stride), extra padding goes after
    assert tf_same_padding((224,), (7,), (2,)) == [2, 3]
    assert tf_same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert tf_same_padding((112,), (3,), (2,)) == [0, 1]
    assert tf_same_padding((8,), (3,), (1,)) == [1, 1]
    assert tf_same_padding((7,), (2,), (2,)) == [0, 1]


def test_i3d_shapes_and_small_input_error():
    model = InceptionI3d().eval()
    with torch.no_grad():
        features = model.features(torch.zeros(1, 3, 9, 40, 33))
        assert features.shape == (1, 1024, 2, 2, 2)  # ceil(f / 8), ceil(h / 32), ceil(w / 32): TF "SAME"
        with pytest.raises(ValueError, match="224x224"):
            model(torch.zeros(1, 3, 8, 64, 64))


def test_evaluate_cli_on_paired_metrics_and_a_broken_file(tmp_path, capsys):
    from evaluate import main
    from fashionflow.video_io import read_video, write_mp4

    rng = np.random.default_rng(7)
    (tmp_path / "gen").mkdir(), (tmp_path / "real").mkdir()
    for name in ("a", "b"):
        real = rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
        write_mp4(tmp_path / "real" / f"{name}.mp4", real, quality=10)
        write_mp4(tmp_path / "gen" / f"{name}.mp4", real if name == "a" else 255 - real, quality=10)
    (tmp_path / "gen" / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "gen" / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")  # a dangling link
    (tmp_path / "gen" / "lonely.mp4").write_bytes((tmp_path / "gen" / "a.mp4").read_bytes())
    (tmp_path / "gen" / "b_1.mp4").write_bytes((tmp_path / "gen" / "b.mp4").read_bytes())  # inference.py's NAME_K
    code = main(["--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "real"), "--metrics", "ssim,psnr",
                 "--output-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    ssim = result["metrics"]["ssim"]
    assert ssim["generated_videos"] == 3 and ssim["real_videos"] == 2 and ssim["generated_samples"] == 18
    assert ssim["per_video"]["a"] > 0.9 > ssim["per_video"]["b"] == ssim["per_video"]["b_1"]
    assert [Path(s["path"]).name for s in result["skipped"]] == ["broken.mp4", "gone.mp4"]
    assert result["skipped"][1]["reason"].endswith("broken symbolic link (its target "
                                                   f"{tmp_path / 'deleted.mp4'} does not exist)")
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "no real video named lonely" in err and "only 3 video pairs" in err
    assert "| psnr |" in (tmp_path / "out" / "metrics.md").read_text()
    # real videos can start later (at the conditioning frame): generated a = real a from frame 2 on
    write_mp4(tmp_path / "gen" / "a.mp4", read_video(tmp_path / "real" / "a.mp4")[0][2:], quality=10)
    (tmp_path / "offsets.json").write_text(json.dumps({"a": 2}))
    psnr = {}
    for offsets in ([], ["--real-offsets", str(tmp_path / "offsets.json")]):
        main(["--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "real"), "--metrics", "psnr",
              "--output-dir", str(tmp_path / "out"), "--device", "cpu", *offsets])
        psnr[bool(offsets)] = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["psnr"]
    assert psnr[True]["per_video"]["a"] > psnr[False]["per_video"]["a"] + 10  # aligned vs shifted by 2 frames
    assert psnr[True]["generated_videos"] == 3
    # a metric whose weights cannot be had fails before any video is read, naming the flag
    assert main(["--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "real"), "--metrics", "is",
                 "--output-dir", str(tmp_path / "out2"), "--device", "cpu"]) == 2
    assert "--c3d-weights" in capsys.readouterr().err and not (tmp_path / "out2").exists()
    assert main(["--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "real"), "--metrics", "fvdd",
                 "--device", "cpu"]) == 2
    assert "unknown metric" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_evaluate_folders_runs_is_and_lpips_through_their_networks(tmp_path):
    from fashionflow.metrics.evaluation import EvalSettings, Networks, evaluate_folders, write_results
    from fashionflow.metrics.lpips import LPIPS
    from fashionflow.video_io import write_mp4

    class TinyC3D(torch.nn.Module):  # logits, not probabilities: evaluate applies the softmax
        def forward(self, x):
            assert x.shape[1:3] == (3, 16) and x.max() > 1.0  # [b, 3, 16, h, w] in [0, 255]
            return torch.stack([x.mean(dim=(1, 2, 3, 4)) / 10.0, -x.mean(dim=(1, 2, 3, 4)) / 10.0], dim=-1)

    rng = np.random.default_rng(9)
    for folder in ("gen", "real"):
        for i, level in enumerate((30, 220)):
            frames = np.clip(rng.normal(level, 5, (17, 32, 32, 3)), 0, 255).astype(np.uint8)
            write_mp4(tmp_path / folder / f"v{i}.mp4", frames, quality=10)
    write_mp4(tmp_path / "gen" / "short.mp4", np.zeros((5, 32, 32, 3), np.uint8))  # too short for a clip
    torch.manual_seed(0)
    nets = Networks(c3d=TinyC3D(), lpips=LPIPS().eval())
    settings = EvalSettings(metrics=("is", "lpips", "ssim"), is_splits=1, paired_skip_frames=1)
    result = evaluate_folders(tmp_path / "gen", tmp_path / "real", settings, nets, log=lambda m: None)
    metrics = result["metrics"]
    probs = torch.tensor([[3.0, -3.0], [22.0, -22.0]]).softmax(-1).numpy()  # dark and bright videos' classes
    assert metrics["is"]["generated_samples"] == 2
    assert metrics["is"]["value"] == pytest.approx(inception_score(probs, 1)[0], rel=0.05) and metrics["is"]["value"] > 1
    assert metrics["lpips"]["generated_samples"] == 32 and metrics["lpips"]["value"] > 0  # 2 x (17 - 1) frames
    json_path, md_path = write_results(result, tmp_path / "out")
    assert json.loads(json_path.read_text())["settings"]["paired_skip_frames"] == 1
    assert "| lpips |" in md_path.read_text() and "fewer than 10 clips per split" in md_path.read_text()
    assert "1 video(s) shorter than 16 frames gave no clip: short" in metrics["is"]["warnings"][0]
