"""The training views of model/augment.py and their strengths (AugmentConfig, the [augment] table)."""

import pytest
import torch

from mmsa.model import MMSAModel
from mmsa.model.augment import DEFAULT_AUGMENT, AugmentConfig, audio_view, image_view


def _spec(B=3, F=40, T=50):
    torch.manual_seed(0)
    spec = torch.randn(B, F, T).abs() + 1.0  # no exact zeros before masking
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 30:] = False
    return spec * mask[:, None], mask


def test_default_config_keeps_the_fixed_views():
    spec, mask = _spec()
    torch.manual_seed(3)
    a, am = audio_view(spec, mask)
    torch.manual_seed(3)
    b, bm = audio_view(spec, mask, AugmentConfig())
    assert torch.equal(a, b) and torch.equal(am, bm)
    faces = torch.rand(4, 1, 48, 48)
    torch.manual_seed(5)
    x = image_view(faces, True)
    torch.manual_seed(5)
    assert torch.equal(x, image_view(faces, True, DEFAULT_AUGMENT))


def test_more_and_wider_spectrogram_masks_zero_more_bins():
    spec, mask = _spec()
    cfg = AugmentConfig(audio_crop=1.0, time_masks=0, freq_masks=3, freq_mask=0.1)
    out, out_mask = audio_view(spec, mask, cfg)
    assert torch.equal(out_mask, mask)  # no crop
    for i in range(3):
        zero_bins = (out[i, :, : int(mask[i].sum())] == 0).all(1).sum()
        assert 4 <= zero_bins <= 12  # 3 masks of 4 bins, possibly overlapping
    cfg = AugmentConfig(audio_crop=1.0, time_masks=2, time_mask=0.2, freq_masks=0)
    out, _ = audio_view(spec, mask, cfg)
    zero_frames = (out[0] == 0).all(0).sum()
    assert 10 <= zero_frames <= 20


def test_image_flip_and_rotation():
    faces = torch.rand(4, 1, 48, 48)
    torch.manual_seed(0)
    plain = image_view(faces, True)
    torch.manual_seed(0)  # the same crops, each mirrored left-right
    flipped = image_view(faces, True, AugmentConfig(image_flip=1.0))
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-5)
    torch.manual_seed(0)
    rotated = image_view(faces, True, AugmentConfig(image_rotate=30.0))
    torch.manual_seed(0)
    plain = image_view(faces, True)
    assert rotated.shape == faces.shape and not torch.allclose(rotated, plain)
    # evaluation ignores the training strengths
    assert torch.equal(image_view(faces, False, AugmentConfig(image_flip=1.0, image_rotate=30.0)), image_view(faces, False))


@pytest.mark.parametrize("bad", [{"audio_crop": 0.0}, {"freq_mask": 1.5}, {"time_masks": -1},
                                 {"image_flip": 2.0}, {"image_rotate": -1.0}])
def test_bad_strengths_are_refused(bad):
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_model_uses_its_augment_config_in_training_only(tiny_bert, tokenizer):
    from mmsa.model import collate
    from tests.model.helpers import random_sample, seeded, tiny_config

    rng = seeded(0)
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late"), tiny_bert, pretrained_bert=False)
    assert model.augment_cfg == DEFAULT_AUGMENT
    batch = collate([random_sample(rng) for _ in range(2)], tokenizer)
    model.eval()
    before = model(batch).score
    model.augment_cfg = AugmentConfig(image_flip=1.0, freq_masks=3)
    assert torch.equal(model(batch).score, before)
