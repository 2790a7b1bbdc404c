import dataclasses

import pytest
import torch

from mmsa.model import MODALITIES, MMSAModel, collate
from mmsa.model.encoders import AudioEncoder, ImageEncoder, Inception2D, SelfAttention2d, TextEncoder, mel_bands
from mmsa.model.features import tokenize
from mmsa.model.losses import LossConfig, joint_loss
from tests.model.helpers import random_sample, seeded, tiny_config


def test_encoder_shapes(tiny_bert, tokenizer):
    text = TextEncoder.from_dir(tiny_bert)
    t = tokenize(["a good day", "bad"], tokenizer, aspects=["day", "bad"])
    f = text(t)
    assert f.h_c.shape == f.h_seg1.shape == f.h_seg2.shape == (2, 32)

    inc = Inception2D(1, 4, 2)
    assert inc(torch.randn(3, 1, 48, 48)).shape == (3, 12, 48, 48)
    inc3 = Inception2D(5, 4, 3)  # odd d: widths 3 and 6, pooling 5 (round(4.5))
    assert inc3(torch.randn(2, 5, 24, 24)).shape == (2, 12, 24, 24)
    att = SelfAttention2d(12, 4)
    x = torch.randn(2, 12, 6, 6)
    assert torch.equal(att(x), x)  # gamma starts at 0: the module starts as identity
    img = ImageEncoder((4, 8), 2, 4, 16)
    assert img(torch.randn(5, 1, 48, 48)).shape == (5, 16)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert img.encode_windows(torch.randn(2, 3, 1, 48, 48), mask).shape == (2, 16)

    aud = AudioEncoder(201, (4, 8), 16)
    spec = torch.randn(2, 201, 90)
    amask = torch.ones(2, 90, dtype=torch.bool)
    assert aud(spec, amask).shape == (2, 16)


def test_mel_bands_are_normalised_triangles_in_frequency_order():
    fb = mel_bands(201, 64, 16000)
    assert fb.shape == (64, 201) and (fb >= 0).all()
    assert torch.allclose(fb.sum(1), torch.ones(64))
    centres = (fb * torch.arange(201.0)).sum(1)  # weighted centre bin of each band
    assert (centres.diff() > 0).all()
    widths = (fb > 0).sum(1)
    assert widths[-1] > 4 * widths[0]  # mel: low bands narrow, high bands wide
    # more bands than bins at the bottom: every band still takes a bin
    assert torch.allclose(mel_bands(21, 20, 16000).sum(1), torch.ones(20))


def test_audio_bands_pool_the_stft_bins_before_the_convolutions():
    aud = AudioEncoder(201, (4, 8), 16, bands=32)
    assert aud.layers[0][0].in_channels == 32
    assert "bands" not in aud.state_dict()  # fixed, derived from the config: not stored
    flat = torch.ones(1, 201, 40)  # a flat spectrum stays flat after pooling
    assert torch.allclose(torch.matmul(aud.bands, flat), torch.ones(1, 32, 40))
    assert aud(torch.randn(2, 201, 40), torch.ones(2, 40, dtype=torch.bool)).shape == (2, 16)
    with pytest.raises(ValueError, match="audio_bands"):
        AudioEncoder(201, (4,), 16, bands=300)


@pytest.mark.parametrize("bands", [0, 24])
def test_audio_embedding_independent_of_batch_padding(bands):
    torch.manual_seed(0)
    aud = AudioEncoder(201, (4, 8, 8), 16, bands=bands).eval()
    short = torch.randn(1, 201, 37)
    alone = aud(short, torch.ones(1, 37, dtype=torch.bool))
    padded = torch.cat([short, torch.zeros(1, 201, 63)], dim=2)
    other = torch.randn(1, 201, 100)
    mask = torch.zeros(2, 100, dtype=torch.bool)
    mask[0, :37] = True
    mask[1] = True
    together = aud(torch.cat([padded, other]), mask)
    assert torch.allclose(alone[0], together[0], atol=1e-5)


@pytest.mark.parametrize("fusion", ["concat", "attention", "late"])
def test_model_output_shapes(tiny_bert, tokenizer, fusion):
    rng = seeded()
    model = MMSAModel.build(tiny_config(tiny_bert, fusion=fusion), tiny_bert)
    b = collate([random_sample(rng), random_sample(rng, n_faces=0), random_sample(rng, text=None)], tokenizer)
    model.eval()
    out = model(b)
    assert out.score.shape == (3,)
    assert out.score.abs().max() <= 3.0
    assert set(out.unimodal) == set(MODALITIES)
    assert torch.isnan(out.unimodal["vision"][1]) and torch.isnan(out.unimodal["text"][2])
    assert not torch.isnan(out.score).any()


@pytest.mark.parametrize("fusion", ["concat", "attention"])
def test_gradients_reach_every_encoder_from_joint_loss(tiny_bert, tokenizer, fusion):
    rng = seeded(1)
    model = MMSAModel.build(tiny_config(tiny_bert, fusion=fusion), tiny_bert)
    model.train()
    b = collate([random_sample(rng) for _ in range(4)], tokenizer)
    out = model(b, text_views=True)
    assert set(out.views) == set(MODALITIES)
    loss = joint_loss(out, torch.tensor([1.0, -2.0, 0.5, 0.0]))
    loss.total.backward()
    for name, params in model.modality_parameters().items():
        grads = [p.grad for p in params if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    # the contrastive losses reach the encoders on their own, too
    model.zero_grad()
    out = model(b, text_views=True)
    only_nce = joint_loss(out, torch.zeros(4), dataclasses.replace(LossConfig(), unimodal=0.0)).total - \
        torch.nn.functional.l1_loss(out.score, torch.zeros(4))
    only_nce.backward()
    assert model.vision.block1.branch2[0][1].weight.grad.abs().sum() > 0
    assert model.audio.layers[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kw", [dict(fusion="concat"), dict(fusion="attention"),
                                dict(fusion="late", vision_head="valence3", audio_head="valence3", face_mesh="packaged")])
def test_the_model_trains_under_autocast(tiny_bert, tokenizer, kw):
    """Mixed precision, as the trainer runs on CUDA (``train.amp``): branch outputs in bfloat16 land in the
    float32 batch tensors (bench/gpu.sh found this failing on an H200; CPU autocast shows it anywhere)."""
    rng = seeded(5)
    model = MMSAModel.build(tiny_config(tiny_bert, **kw), tiny_bert).train()
    b = collate([random_sample(rng), random_sample(rng, text=None), random_sample(rng, seconds=0),
                 random_sample(rng, n_faces=0)], tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(b, text_views=True)
        loss = joint_loss(out, torch.tensor([1.0, -2.0, 0.5, 0.0]))
    assert torch.isfinite(out.score).all()
    assert torch.isfinite(loss.total)
    loss.total.backward()
    for name, params in model.modality_parameters().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params if p.requires_grad), name


@pytest.mark.parametrize("fusion", ["concat", "attention", "late"])
@pytest.mark.parametrize("masked", ["text", "audio", "vision"])
def test_masked_modality_input_does_not_change_output(tiny_bert, tokenizer, fusion, masked):
    rng = seeded(2)
    model = MMSAModel.build(tiny_config(tiny_bert, fusion=fusion), tiny_bert).eval()
    base = random_sample(rng)
    b1 = collate([base], tokenizer)
    b2 = collate([random_sample(rng, text="a completely different sentence", seconds=2.5, n_faces=7)], tokenizer)
    for b in (b1, b2):
        if masked == "text":
            b.text_present[:] = False
        elif masked == "audio":
            b.audio_present[:] = False
        else:
            b.vision_present[:] = False
    # make every other modality identical between the two batches
    for m in MODALITIES:
        if m == masked:
            continue
        if m == "text":
            b2.text, b2.text_present = b1.text, b1.text_present
        elif m == "audio":
            b2.audio, b2.audio_mask, b2.audio_present = b1.audio, b1.audio_mask, b1.audio_present
        else:
            b2.faces, b2.face_mask, b2.vision_present = b1.faces, b1.face_mask, b1.vision_present
    with torch.inference_mode():
        o1, o2 = model(b1), model(b2)
    assert torch.equal(o1.score, o2.score)
    # and the input does matter when present
    with torch.inference_mode():
        b3 = collate([random_sample(rng, text="terrible awful", seconds=2.5, n_faces=7)], tokenizer)
        assert not torch.equal(model(b3).score, o1.score)


def test_single_token_text_and_batch_of_one(tiny_bert, tokenizer):
    rng = seeded(3)
    model = MMSAModel.build(tiny_config(tiny_bert), tiny_bert)
    model.train()
    out = model(collate([random_sample(rng, text="ok")], tokenizer), text_views=True)
    loss = joint_loss(out, torch.tensor([0.0]))
    assert torch.isfinite(loss.total)
    loss.total.backward()


def test_late_fusion_is_the_weighted_mean_of_present_unimodal_scores(tiny_bert, tokenizer):
    rng = seeded(5)
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="late", late_weights=(0.6, 0.3, 0.1)), tiny_bert).eval()
    b = collate([random_sample(rng), random_sample(rng, n_faces=0), random_sample(rng, text=None, n_faces=0)], tokenizer)
    with torch.inference_mode():
        out = model(b)
    u = {m: out.unimodal[m] for m in MODALITIES}
    expected = [
        (0.6 * u["text"][0] + 0.3 * u["audio"][0] + 0.1 * u["vision"][0]) / 1.0,
        (0.6 * u["text"][1] + 0.3 * u["audio"][1]) / 0.9,
        u["audio"][2],
    ]
    assert torch.allclose(out.score, torch.stack(expected), atol=1e-6)
    with pytest.raises(ValueError, match="late_weights"):
        MMSAModel.build(tiny_config(tiny_bert, fusion="late", late_weights=(0.0, 0.0, 0.0)), tiny_bert)


def test_second_views_only_where_asked(tiny_bert, tokenizer):
    rng = seeded(6)
    model = MMSAModel.build(tiny_config(tiny_bert), tiny_bert).train()
    b = collate([random_sample(rng) for _ in range(3)], tokenizer)
    assert set(model(b, views=()).views) == set()
    assert set(model(b, views=("vision",)).views) == {"vision"}
    assert set(model(b, text_views=True).views) == {"text", "audio", "vision"}


def test_valence_score_is_continuous_and_keeps_the_argmax_class():
    from mmsa.common.scale import NEUTRAL_BAND, polarity_index
    from mmsa.model.network import valence_class, valence_score

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(20000, 3, generator=g) * 3, dim=1)
    s = valence_score(probs)
    assert s.abs().max() <= 3.0
    assert torch.equal(valence_class(s), probs.argmax(1))  # the polarity rule agrees with the arg-max
    # sure answers reach the ends of the scale; a tie sits on the band's edge
    sure = valence_score(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.2, 0.4, 0.4]]))
    assert torch.allclose(sure, torch.tensor([-3.0, 0.0, 3.0, NEUTRAL_BAND]))
    # continuity: a small step in the probabilities is a small step in the score, across class boundaries
    step = torch.tensor([1e-4, -2e-4, 1e-4])
    near = torch.tensor([[0.3, 0.35, 0.35], [0.35, 0.35, 0.3], [0.4, 0.2, 0.4]])
    assert (valence_score(near + step) - valence_score(near)).abs().max() < 2e-3
    # the one polarity rule (mmsa.model.scale): |s| < 0.5 is neutral, so +-0.5 itself is not
    edges = [-0.51, -0.5, -0.49, 0.0, 0.49, 0.5, 0.51]
    assert valence_class(torch.tensor(edges)).tolist() == [0, 0, 1, 1, 1, 2, 2] == [polarity_index(x) for x in edges]


def test_valence3_vision_head_classifies_and_trains_with_cross_entropy(tiny_bert, tokenizer):
    rng = seeded(3)
    model = MMSAModel.build(tiny_config(tiny_bert, vision_head="valence3", fusion="late"), tiny_bert)
    assert model.heads["vision"][-1].out_features == 3 and model.heads["audio"][-1].out_features == 1
    b = collate([random_sample(rng), random_sample(rng, n_faces=0), random_sample(rng, text=None)], tokenizer)
    model.eval()
    out = model(b)
    z = out.logits["vision"]
    assert z.shape == (3, 3) and torch.isnan(z[1]).all() and torch.isfinite(z[[0, 2]]).all()
    from mmsa.model.network import valence_score
    assert torch.allclose(out.unimodal["vision"][[0, 2]], valence_score(z[[0, 2]].softmax(-1)))
    assert set(out.logits) == {"vision"}

    # the vision loss is the cross entropy on the labels' polarity classes; fused = 0 leaves the fused score out
    model.train()
    labels = torch.tensor([2.0, -2.0, 0.0])
    out = model(b)
    cfg = LossConfig(task="mse", unimodal=1.0, text=0, audio=0, vision=0, fused=0.0)
    loss = joint_loss(out, labels, cfg)
    ce = torch.nn.functional.cross_entropy(out.logits["vision"][[0, 2]], torch.tensor([2, 1]))
    assert loss.parts["uni_vision"] == pytest.approx(float(ce.detach()), rel=1e-5)
    expected = sum(loss.parts[k] for k in ("uni_text", "uni_audio", "uni_vision"))
    assert loss.parts["total"] == pytest.approx(expected, rel=1e-5)
    loss.total.backward()
    assert model.heads["vision"][-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="label_smoothing"):
        LossConfig(label_smoothing=1.0)


def test_face_mesh_features_join_the_image_encoder(tiny_bert, tokenizer):
    rng = seeded(4)
    model = MMSAModel.build(tiny_config(tiny_bert, face_mesh="packaged"), tiny_bert)
    assert model.vision.mesh is not None
    assert not any(k.startswith("vision.mesh.") for k in model.state_dict())  # frozen, from the package
    assert any(k.startswith("vision.mesh_proj.") for k in model.state_dict())
    b = collate([random_sample(rng, n_faces=1), random_sample(rng)], tokenizer)
    out = model.train()(b)
    joint_loss(out, torch.tensor([1.0, -1.0])).total.backward()
    assert model.vision.mesh_proj[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vision.mesh.parameters())
    # a training batch with a single face crop still runs (BatchNorm falls back on running statistics)
    model(collate([random_sample(rng, n_faces=1)], tokenizer))


def test_face_mesh_sees_the_whole_crop_and_ignores_mirroring():
    torch.manual_seed(0)
    img = ImageEncoder((4, 8), 2, 4, 16, face_mesh=True).eval()
    whole = torch.rand(2, 3, 1, 48, 48)
    view = torch.rand(2, 3, 1, 48, 48)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    feats = img.mesh_features(whole[0])
    assert feats.map is None  # the CNN sees pixels: the trunk's map is not kept
    assert torch.allclose(feats.vec, img.mesh_features(torch.flip(whole[0], dims=[3])).vec, atol=1e-4)
    with torch.no_grad():
        got = img.encode_windows(view, mask, img.window_mesh(whole, mask))
        cnn_only = img.encode_windows(view, mask, img.window_mesh(torch.zeros_like(whole), mask))
        assert not torch.allclose(got, cnn_only)  # the mesh input is `whole`, not the view
        first = (img(view[0, :2], img.mesh_features(whole[0, :2]))).mean(0)
        assert torch.allclose(got[0], first, atol=1e-5)
        assert img.window_mesh(whole, torch.zeros_like(mask)) is None


def test_mesh_cnn_runs_the_papers_cnn_on_the_trunks_map(tiny_bert, tokenizer):
    """face_cnn = "mesh": the 2D-Inception + self-attention CNN reads the trunk's 12x12 map (mirror
    averaged, flipped back), never the pixels of the view; training views shift the map."""
    torch.manual_seed(0)
    img = ImageEncoder((4, 8), 2, 4, 16, face_mesh=True, cnn_input="mesh").eval()
    whole = torch.rand(2, 1, 48, 48)
    feats = img.mesh_features(whole)
    assert feats.map.shape == (2, 128, 12, 12) and feats.vec.shape == (2, 1152)
    mirrored = img.mesh_features(torch.flip(whole, dims=[3]))
    assert torch.allclose(torch.flip(mirrored.map, dims=[3]), feats.map, atol=1e-4)
    # training: each crop's map is the crop's own or its mirror's (flipped back), not their mean
    own = img.mesh.outputs(whole)["p_re_lu_12"]
    flipped = torch.flip(img.mesh.outputs(torch.flip(whole, dims=[3]))["p_re_lu_12"], dims=[3])
    for _ in range(3):
        tv = img.mesh_features(whole, train_view=True).map
        assert all(torch.allclose(tv[i], own[i], atol=1e-5) or torch.allclose(tv[i], flipped[i], atol=1e-5)
                   for i in range(2))
    with torch.no_grad():
        a = img(torch.rand(2, 1, 48, 48), feats)
        b = img(torch.zeros(2, 1, 48, 48), feats)
        assert torch.allclose(a, b)  # the pixels of the view play no part
        shifted = [img(whole, feats, train_view=True) for _ in range(4)]
        assert any(not torch.allclose(shifted[0], s) for s in shifted[1:])
    assert not hasattr(img, "block2") and img.block1.branch3[0].in_channels == 128
    model = MMSAModel.build(tiny_config(tiny_bert, face_mesh="packaged", face_cnn="mesh", vision_head="valence3"),
                            tiny_bert)
    out = model.train()(collate([random_sample(seeded(1)), random_sample(seeded(2))], tokenizer), views=("vision",))
    v1, v2 = out.views["vision"]
    assert v1.shape == v2.shape == (2, 16) and not torch.allclose(v1, v2)
    joint_loss(out, torch.tensor([2.0, -2.0])).total.backward()
    assert model.vision.block1.branch1[0].weight.grad.abs().sum() > 0
    assert model.vision.attention.f.weight.grad is not None


def test_valence3_audio_head_classifies_too(tiny_bert, tokenizer):
    model = MMSAModel.build(tiny_config(tiny_bert, audio_head="valence3", fusion="late"), tiny_bert).eval()
    assert model.heads["audio"][-1].out_features == 3 and model.heads["vision"][-1].out_features == 1
    out = model(collate([random_sample(seeded(5)), random_sample(seeded(6), seconds=0)], tokenizer))
    assert set(out.logits) == {"audio"} and torch.isnan(out.logits["audio"][1]).all()
    from mmsa.model.network import valence_score
    assert torch.allclose(out.unimodal["audio"][:1], valence_score(out.logits["audio"][:1].softmax(-1)))


def test_score_probs_is_an_ordinal_model_around_the_polarity_rule():
    from mmsa.model.network import score_probs

    s = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])
    p = score_probs(s, 0.5)
    assert torch.allclose(p.sum(-1), torch.ones(5)) and (p >= 0).all()
    assert p[0, 0] > 0.99 and p[-1, 2] > 0.99 and p[2, 1] == p[2].max()
    assert p[1, 0] == pytest.approx(0.5) and p[3, 2] == pytest.approx(0.5)  # the boundaries are the rule's
    assert (p[:, 2].diff() > 0).all() and (p[:, 0].diff() < 0).all()
    flat, sharp = score_probs(torch.tensor([1.0]), 2.0), score_probs(torch.tensor([1.0]), 0.2)
    assert sharp[0, 2] > flat[0, 2]  # a larger temperature: less sure


def test_calibrated_fusion_lets_voice_and_face_decide_when_the_words_are_neutral(tiny_bert, tokenizer):
    """fusion = "calibrated": one modality -> its score; several -> the product of their calibrated
    probabilities, so a flat (unsure, near-neutral) head leaves the decision to the sure ones."""
    from mmsa.model.network import product_of_experts, valence_score

    flat, sure_neg = torch.tensor([0.3, 0.4, 0.3]), torch.tensor([0.9, 0.05, 0.05])
    probs = torch.stack([flat, sure_neg, torch.full((3,), float("nan"))])[None]
    fused = product_of_experts(probs, torch.tensor([[1.0, 1.0, 0.0]]))
    assert fused.argmax() == 0 and fused[0, 0] > 0.85  # the voice decides; the absent face plays no part
    strong_pos = torch.tensor([0.02, 0.04, 0.94])
    assert product_of_experts(torch.stack([strong_pos, torch.tensor([0.6, 0.3, 0.1]), flat])[None],
                              torch.ones(1, 3)).argmax() == 2  # clear words win over a moderate voice
    model = MMSAModel.build(tiny_config(tiny_bert, fusion="calibrated", audio_head="valence3",
                                        vision_head="valence3", calibration=(0.5, 2.0, 1.0)), tiny_bert).eval()
    assert not any(k.startswith("fusion") for k in model.state_dict())  # nothing trained: fitted temperatures
    b = collate([random_sample(seeded(7), n_faces=0, seconds=0), random_sample(seeded(8))], tokenizer)
    with torch.no_grad():
        out = model(b)
    assert out.score[0] == pytest.approx(float(out.unimodal["text"][0]), abs=1e-5)  # text alone: its score
    p = model.polarity_probs({m: u[1:] for m, u in out.unimodal.items()}, {m: z[1:] for m, z in out.logits.items()})
    assert torch.allclose(p[0, 1], torch.softmax(out.logits["audio"][1] / 2.0, -1))  # the audio temperature
    expected = valence_score(product_of_experts(p, torch.ones(1, 3)))
    assert out.score[1] == pytest.approx(float(expected[0]), abs=1e-5)
    with pytest.raises(ValueError, match="calibration: temperatures must be > 0"):
        tiny_config(tiny_bert, calibration=(1.0, 0.0, 1.0))


def test_text_gate_lets_clear_words_decide_and_neutral_words_hand_over():
    """fusion_gate = "text": the words weigh their polarity confidence c = |P(pos) - P(neg)| and the voice
    and face 1 - c; without text every other head weighs fully; gate "none" is the presence flags."""
    from mmsa.model.network import fusion_weights, product_of_experts

    clear_pos, neutral_words = torch.tensor([0.03, 0.07, 0.90]), torch.tensor([0.25, 0.50, 0.25])
    sure_neg_voice, absent = torch.tensor([0.90, 0.08, 0.02]), torch.full((3,), float("nan"))
    probs = torch.stack([torch.stack([clear_pos, sure_neg_voice, absent]),
                         torch.stack([neutral_words, sure_neg_voice, absent]),
                         torch.stack([absent, sure_neg_voice, clear_pos])])
    present = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    w = fusion_weights(probs, present, "text")
    assert torch.allclose(w[0], torch.tensor([0.87, 0.13, 0.0])) and torch.allclose(w[1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(w[2], present[2])  # no words: the voice and face as in the plain product
    assert torch.equal(fusion_weights(probs, present, "none"), present)
    gated, plain = product_of_experts(probs, w), product_of_experts(probs, present)
    assert plain[0].argmax() == 0 and gated[0].argmax() == 2  # the sure voice outvotes clear words only ungated
    assert gated[1].argmax() == 0 and gated[1, 0] == pytest.approx(0.90, abs=1e-4)  # neutral words: the voice alone


def test_text_prior_is_divided_only_when_heads_are_fused(tiny_bert, tokenizer):
    """text_prior: the text head's class frequencies come out of its probabilities in the fused product of
    two or more heads; text alone keeps its own score; the config refuses a malformed prior."""
    from mmsa.model.network import divide_prior, product_of_experts, valence_score

    q = divide_prior(torch.tensor([0.2, 0.2, 0.6]), torch.tensor([0.25, 0.25, 0.5]))
    assert torch.allclose(q, torch.tensor([2 / 7, 2 / 7, 3 / 7]))  # (0.8, 0.8, 1.2) renormalised: the lean is gone
    cfg = {"fusion": "calibrated", "audio_head": "valence3", "vision_head": "valence3"}
    b = collate([random_sample(seeded(7), n_faces=0, seconds=0), random_sample(seeded(8))], tokenizer)
    plain = MMSAModel.build(tiny_config(tiny_bert, **cfg), tiny_bert).eval()
    prior = (0.3, 0.2, 0.5)
    divided = MMSAModel.build(tiny_config(tiny_bert, **cfg, text_prior=prior), tiny_bert).eval()
    divided.load_state_dict(plain.state_dict())
    with torch.no_grad():
        out_plain, out = plain(b), divided(b)
    assert out.score[0] == out_plain.score[0] == out.unimodal["text"][0]  # text alone: its score, undivided
    p = divided.polarity_probs({m: u[1:] for m, u in out.unimodal.items()}, {m: z[1:] for m, z in out.logits.items()})
    p[:, 0] = divide_prior(p[:, 0], torch.tensor(prior))
    assert out.score[1] == pytest.approx(float(valence_score(product_of_experts(p, torch.ones(1, 3)))[0]), abs=1e-5)
    assert out.score[1] != pytest.approx(float(out_plain.score[1]), abs=1e-4)
    for bad in [(0.5, 0.5), (0.5, 0.0, 0.5)]:
        with pytest.raises(ValueError, match="text_prior"):
            tiny_config(tiny_bert, text_prior=bad)
