import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from course_utils import images


def test_roundtrip_pil_tensor_pil_is_exact():
    arr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    x = images.to_tensor(arr)
    assert x.shape == (1, 3, 16, 24) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(np.asarray(images.to_pil(x)[0]), arr)


def test_rgba_and_grayscale():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent -> white
    assert torch.allclose(images.to_tensor(rgba), torch.ones(1, 3, 8, 8))
    gray = Image.new("L", (8, 8), 0)
    assert torch.allclose(images.to_tensor(gray), -torch.ones(1, 3, 8, 8))


def test_size_not_multiple_of_8_is_an_error_unless_resized():
    img = Image.new("RGB", (30, 20))
    with pytest.raises(ValueError, match="multiples of 8"):
        images.to_tensor(img)
    assert images.to_tensor(img, size=16).shape == (1, 3, 16, 16)
    assert images.to_tensor(img, size=(24, 40)).shape == (1, 3, 24, 40)


def test_bad_types():
    with pytest.raises(TypeError, match="uint8"):
        images.to_tensor(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="PIL image"):
        images.to_tensor("photo.png")


def test_psnr_equals_scikit_image():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-1, 1, (3, 8, 8)), rng.uniform(-1, 1, (3, 8, 8))
    ours = images.psnr(torch.tensor(a), torch.tensor(b))
    assert ours == pytest.approx(peak_signal_noise_ratio(a, b, data_range=2.0), rel=1e-6)
    assert images.psnr(torch.ones(2), torch.ones(2)) == float("inf")


def test_encode_decode_use_the_config_scaling_factor(tiny_pipe):
    vae = tiny_pipe.vae
    x = images.to_tensor(np.full((64, 64, 3), 128, dtype=np.uint8))
    z = images.encode(vae, x)
    assert z.shape == (1, 4, 8, 8)
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        ref_img = vae.decode(ref / vae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.allclose(z, ref) and torch.allclose(images.decode(vae, z), ref_img)


def test_psnr_needs_two_tensors_of_one_shape():
    with pytest.raises(ValueError, match=r"same shape, got \(1, 3, 8, 8\) and \(1, 3, 16, 16\)"):
        images.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 16, 16))
    with pytest.raises(TypeError, match="two tensors"):
        images.psnr(torch.zeros(3), [0, 0, 0])


def test_range_converters_are_inverse_and_named():
    from course_utils.images import to_signed_range, to_unit_range

    x = torch.linspace(-1, 1, 11)
    assert torch.allclose(to_signed_range(to_unit_range(x)), x, atol=1e-6)
    assert to_unit_range(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]  # clamped


def test_check_image_allows_resampling_overshoot_and_rejects_0_255():
    x = torch.full((1, 3, 8, 8), 1.05)  # a bicubic resize overshoots [-1, 1] a little
    assert images.check_image(x) is x
    with pytest.raises(ValueError, match="looks like 0..255"):
        images.check_image(x * 200)


def test_latent_channels_share_one_colour_scale_centred_at_zero():
    import matplotlib

    matplotlib.use("Agg")
    from course_utils import viz

    z = torch.tensor([[[[-1.0, 0.5]], [[2.0, -3.0]]]])  # (1, 2 channels, 1, 2)
    fig = viz.latent_channels(z)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2 and all(im.get_clim() == (-3.0, 3.0) for im in images)
    assert len(fig.axes) == 3  # two channels and one colour bar


def test_a_reward_gradient_survives_a_float16_decoder(tiny_pipe, monkeypatch):
    """A reward averaged over SD 1.5's 8 x 3 x 512 x 512 numbers weighs each pixel 5e-7: through
    a float16 decoder every component of its gradient at z rounds to 0, unless the gradient is
    scaled (decode's GRAD_SCALE). The float32 decoder is the reference."""
    import copy

    from course_utils import images as I

    vae = copy.deepcopy(tiny_pipe.vae).requires_grad_(False)  # a copy: it goes to float16 below
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def gradient(v):
        zz = z.clone().requires_grad_(True)
        x = I.decode(v, zz, value_range="unit", keep_grad=True)
        (x.float()[:, 0].sum() / (8 * 3 * 512 * 512)).backward()
        return zz.grad.double()

    ref = gradient(vae)
    half = vae.to(torch.float16)
    scaled = gradient(half)
    assert ((scaled - ref).norm() / ref.norm()).item() < 0.02
    monkeypatch.setattr(I, "GRAD_SCALE", 1.0)  # as it was: no scaling
    assert (gradient(half) == 0).all()
