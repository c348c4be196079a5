import pytest
import torch

from distillset import Evaluator
from distillset.errors import InvalidParameterError
from distillset.formation import check_factor, decode, decode_labels, encode
from distillset.synthetic import SyntheticSet


def test_decode_cuts_row_major_tiles_and_upsamples_each():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = decode(x, 2)
    assert out.shape == (8, 3, 8, 8)
    # image 0's tile (row 1, column 0) is the 5th decoded image's source; bilinear up x2 of a 4x4 tile
    tile = x[:1, :, 4:, :4]
    assert torch.allclose(out[2:3], torch.nn.functional.interpolate(tile, size=(8, 8), mode="bilinear"))
    assert torch.equal(decode(x, 1), x)


def test_labels_follow_their_images_and_stay_class_major():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    assert decode_labels(y, 3).tolist() == [0] * 18 + [1] * 18 + [2] * 18
    soft = torch.eye(3)
    assert torch.equal(decode_labels(soft, 2)[4:8], soft[1].expand(4, 3))


def test_encode_then_decode_round_trips_smooth_images():
    # constant images survive downsampling + upsampling exactly; tile k of stored image j is input j*f*f + k
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 2, 6, 6).contiguous()
    stored = encode(x, 2)
    assert stored.shape == (2, 2, 6, 6)
    assert torch.allclose(decode(stored, 2), x)


def test_decode_is_differentiable_and_spreads_gradient_over_every_pixel():
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    decode(x, 2).sum().backward()
    assert x.grad is not None and (x.grad > 0).all()


def test_a_factor_that_does_not_divide_the_image_is_refused_with_the_ones_that_do():
    with pytest.raises(InvalidParameterError, match=r"factor=3 .* 28x28 .*\[1, 2, 4, 7, 14\]"):
        check_factor(3, (1, 28, 28))
    check_factor(2, (3, 32, 32))


def test_synthetic_set_records_and_decodes_its_factor(digits):
    s = SyntheticSet(digits.normalize(digits.train.images[:10]), torch.arange(10), {**digits.meta(), "factor": 2})
    assert s.factor == 2 and s.ipc == 1
    d = s.decoded()
    assert len(d) == 40 and d.factor == 1 and d.meta["stored_factor"] == 2 and d.labels.tolist()[:5] == [0, 0, 0, 0, 1]
    with pytest.raises(InvalidParameterError, match="factor"):
        SyntheticSet(s.images, s.labels, {**s.meta, "factor": 3}).check()


def test_the_evaluator_trains_on_the_decoded_images(digits):
    """A factor-2 set and its decoded twin (factor 1) are the same training set: identical accuracies."""
    s = SyntheticSet(digits.normalize(digits.train.images[:10]), digits.train.labels[:10], {**digits.meta(), "factor": 2})
    ev = Evaluator("mlp", n_models=2, epochs=5, augment=None, device="cpu")
    a, b = ev.score(s, digits)["mlp"].accuracies, ev.score(s.decoded(), digits)["mlp"].accuracies
    assert a == b
    c = ev.score(SyntheticSet(s.images, s.labels, {**s.meta, "factor": 1}), digits)["mlp"].accuracies
    assert c != a
