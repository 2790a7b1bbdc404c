"""The fusion network of the paper: encoders, concat (or attention) fusion, fused and unimodal heads.

``MMSAModel.forward(ModelInputs) -> ModelOutput``. Choices where the paper is vague:

* Output: the paper classifies with softmax (Eq. 10); MOSI/MOSEI report MAE and Corr, so the
  head is a regression onto [-3, 3] (``score_range * tanh(raw / score_range)``).
* Fusion ``concat`` (default, Eq. 9): concat(h_img1; h^c; h_img2; h_audio) plus the three
  presence flags -> FC -> ReLU -> FC. A missing modality's slots are zeros and its flag is 0,
  so the fused score never depends on a missing modality's input.
* Fusion ``attention``: our reading of the title's "self-attention feature fusion" and of
  "the number of transform layers is set to 5": a transformer encoder (``fusion_layers``)
  over a [CLS] token and one token per present modality (text, audio, image view 1,
  image view 2); missing modalities are key-padding-masked; the [CLS] output -> FC.
* Fusion ``late``: a weighted mean of the unimodal scores over the present modalities, with
  fixed weights from the config (``late_weights``), chosen by hand.
* Fusion ``calibrated``: each head's scores (or logits) become calibrated polarity probabilities
  (:func:`score_probs` for regressing heads, a tempered softmax for classifying ones; the
  temperatures ``calibration`` are fitted on each head's own held-out data by ``mmsa-fit-fusion``);
  the present heads' probabilities are multiplied (:func:`product_of_experts`) and the fused score
  is the class margin of the product (:func:`valence_score`). A head with flat calibrated
  probabilities (words near neutral; a head often wrong on held-out data) changes the product
  little, so the sure heads decide, per utterance. One present modality: the fused score is its
  own score. No aligned trimodal data exists here to fit more than the temperatures. Two options
  (``mmsa-fit-fusion``): ``text_prior`` divides the text head's class prior out (its labels lean
  positive; the other heads were trained class-balanced), and ``fusion_gate = "text"`` weighs the
  heads by how sure the words are (:func:`fusion_weights`): clear words decide, near-neutral words
  leave the score to the voice and face.
* Unimodal heads (Table 5): one FC -> ReLU -> FC head per modality on its own embedding
  (vision: mean of the two view embeddings), so each modality has its own score.
* ``[model] vision_head = "valence3"`` (and ``audio_head``): the head outputs three logits (negative,
  neutral, positive) instead of a score, because face data carries emotion classes, not a
  sentiment grade, and on FER2013 a classifier's arg-max separated the three valence classes
  better than any threshold on a regressed score (docs/default-model.md). Its score is
  :func:`valence_score` of the class probabilities: continuous, in [-score_range, score_range],
  and always in the arg-max class's band of the polarity rule (``mmsa.model.scale``).
* ``[model] vision_members = N`` (with ``vision_head = "valence3"``): an ensemble of N face branches. Member
  1 is ``vision`` + ``heads["vision"]``; members 2..N (``vision_members``) have their own CNN, projections
  and head and read member 1's frozen-network outputs (one pass of the face mesh and the expression
  network for all). The face logits are the log of the members' mean class probabilities (so a
  temperature and :func:`valence_score` apply as to one head); the face *embedding* (the ``concat`` and
  ``attention`` fusions, the InfoNCE views) stays member 1's. Members are assembled from separate runs
  (``[train] ensemble``), not trained together; in training a member sees the uncut crops' mesh outputs.
* Views: in training the two image views are random crops and the audio views random
  crops/masks (``augment.py``); the text views are segment 1 / segment 2 aspect features
  when aspects are given, else two dropout passes of BERT (Eq. 6). The second pass of a
  modality is only computed when its contrastive loss needs it (``views``); otherwise one
  random view is used (for both image slots of Eq. 9). In evaluation the views are
  deterministic.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from mmsa.common.scale import NEUTRAL_BAND

from . import augment
from .config import ModelConfig
from .encoders import AudioEncoder, ImageEncoder, SpeechStatsEncoder, TextEncoder
from .features import MODALITIES, N_FREQ, SAMPLE_RATE_HZ, ModelInputs, TextInputs
from .runtime import has_rows, put_rows
from .speech import STATS_DIM

log = logging.getLogger(__name__)


@dataclass
class ModelOutput:
    """What the model returns; absent modalities have NaN unimodal scores."""

    score: torch.Tensor  # (B,) fused score on [-score_range, score_range]
    unimodal: dict[str, torch.Tensor]  # modality -> (B,) score, NaN where absent
    presence: torch.Tensor  # (B, 3) bool, order of MODALITIES
    views: dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> two (n_present, D) views
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # classifying heads: (B, 3), NaN where absent


def valence_class(labels: torch.Tensor) -> torch.Tensor:
    """Scores or labels (B,) -> class index 0 negative, 1 neutral, 2 positive: the tensor form of
    :func:`mmsa.model.scale.polarity_index` (neutral iff |s| < NEUTRAL_BAND)."""
    return torch.where(labels.abs() < NEUTRAL_BAND, 1, torch.where(labels > 0, 2, 0)).long()


def valence_score(probs: torch.Tensor, score_range: float = 3.0) -> torch.Tensor:
    """(B, 3) probabilities of negative, neutral, positive -> (B,) score, by class margin.

    Where positive is the most probable class, the score is 0.5 + (range - 0.5) times its lead
    over the runner-up (so in (0.5, range]); negative mirrors it; where neutral leads, the score
    is 0.5 (p_pos - p_neg) / (p_neu - min(p_pos, p_neg)), inside [-0.5, 0.5]. The pieces meet
    at the class boundaries, so the score is continuous, and its polarity class is the arg-max.
    """
    neg, neu, pos = probs.unbind(-1)
    lead = score_range - NEUTRAL_BAND
    s_pos = NEUTRAL_BAND + lead * (pos - torch.maximum(neg, neu))
    s_neg = -NEUTRAL_BAND - lead * (neg - torch.maximum(pos, neu))
    s_neu = NEUTRAL_BAND * (pos - neg) / (neu - torch.minimum(pos, neg)).clamp_min(1e-6)
    return torch.where((pos > neu) & (pos >= neg), s_pos, torch.where((neg > neu) & (neg > pos), s_neg, s_neu))


def score_probs(score: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B,) scores of a regressing head -> (B, 3) polarity probabilities, an ordinal logistic model
    around the polarity rule's boundaries: P(positive) = sigmoid((s - 0.5) / T), P(negative) =
    sigmoid((-0.5 - s) / T), P(neutral) the rest (>= 0, as the two boundaries are ordered). The
    temperature T (in score units) is fitted on held-out data (``mmsa-fit-fusion``)."""
    pos = torch.sigmoid((score - NEUTRAL_BAND) / temperature)
    neg = torch.sigmoid((-NEUTRAL_BAND - score) / temperature)
    return torch.stack([neg, (1.0 - pos - neg).clamp_min(0.0), pos], -1)


def product_of_experts(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, M, 3) calibrated polarity probabilities of each head + (B, M) weights -> (B, 3) fused.

    The heads' probabilities raised to their weights (0 where a head is absent, 1 for a plain
    product), multiplied and renormalised: their evidence combined as if independent, with a
    uniform prior over the three classes. A head whose calibrated probabilities are flat (words near
    neutral; a head often wrong on its held-out data) changes the product little, so the sure heads
    decide, utterance by utterance.
    """
    logp = torch.log(torch.nan_to_num(probs, nan=1.0).clamp_min(1e-6)) * weights[..., None]
    return torch.softmax(logp.sum(1), -1)


def divide_prior(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """(..., 3) probabilities under the class prior ``prior`` (3,) -> the same evidence under a uniform prior."""
    q = probs / prior
    return q / q.sum(-1, keepdim=True)


def fusion_weights(probs: torch.Tensor, present: torch.Tensor, gate: str) -> torch.Tensor:
    """(B, M, 3) calibrated probabilities (text first) + (B, M) presence (float) -> (B, M) weights of
    :func:`product_of_experts`. ``none``: the presence flags. ``text``: the text head weighs its
    polarity confidence c = |P(positive) - P(negative)| in [0, 1] and every other head 1 - c (an
    interpolation in log space between "the words decide" and "the voice and face decide"); without
    text, c = 0. Chosen on RAVDESS actors 1-16 (out-of-fold voice, Whisper's transcripts) among the
    plain product and two gates, each with and without ``text_prior`` (examples/fusion_rules.py;
    docs/default-model.md, "Fusion")."""
    if gate == "none":
        return present
    c = torch.nan_to_num((probs[:, 0, 2] - probs[:, 0, 0]).abs()) * present[:, 0]  # (B,)
    others = (1.0 - c)[:, None] * present[:, 1:]
    return torch.cat([c[:, None], others], 1)


def _head(d_in: int, hidden: int, dropout: float, out: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


def _rows(x: TextInputs, idx: torch.Tensor) -> TextInputs:
    return TextInputs(
        x.input_ids[idx], x.attention_mask[idx], x.token_type_ids[idx],
        None if x.seg1 is None else x.seg1[idx], None if x.seg2 is None else x.seg2[idx],
    )


class MMSAModel(nn.Module):
    def __init__(self, cfg: ModelConfig, text_encoder: TextEncoder) -> None:
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden_dim
        self.text = text_encoder
        self.text_proj = nn.Linear(text_encoder.dim, cfg.text_proj_dim) if cfg.text_proj_dim else nn.Identity()
        d_text = cfg.text_proj_dim or text_encoder.dim
        self.audio: AudioEncoder | SpeechStatsEncoder
        if cfg.audio_input == "whisper":
            self.audio = SpeechStatsEncoder(STATS_DIM, H)
        else:
            self.audio = AudioEncoder(N_FREQ, cfg.audio_channels, H, cfg.audio_bands, SAMPLE_RATE_HZ)
        self.vision = ImageEncoder(
            cfg.inception_channels, cfg.inception_width, cfg.attention_dim, H, face_mesh=cfg.face_mesh == "packaged",
            cnn_input=cfg.face_cnn, expression_net=cfg.face_expression == "packaged",
        )
        self.dims = {"text": d_text, "audio": H, "vision": H}
        heads = {"audio": cfg.audio_head, "vision": cfg.vision_head}
        self.classes = {m: 3 for m, head in heads.items() if head == "valence3"}
        self.heads = nn.ModuleDict({
            m: _head(self.dims[m], H, cfg.dropout, self.classes.get(m, 1)) for m in MODALITIES
        })
        # further face branches of an ensemble (cfg.vision_members): own CNN, projections and head each
        self.vision_members = nn.ModuleList(nn.ModuleDict({
            "encoder": ImageEncoder(
                cfg.inception_channels, cfg.inception_width, cfg.attention_dim, H, face_mesh=cfg.face_mesh == "packaged",
                cnn_input=cfg.face_cnn, expression_net=cfg.face_expression == "packaged", frozen_nets=False),
            "head": _head(H, H, cfg.dropout, 3),
        }) for _ in range(cfg.vision_members - 1))
        if cfg.fusion == "concat":
            self.fusion = _head(d_text + 3 * H + len(MODALITIES), H, cfg.dropout)
        elif cfg.fusion == "attention":
            self.tokens = nn.ModuleDict({
                "text": nn.Linear(d_text, H), "audio": nn.Linear(H, H),
                "vision1": nn.Linear(H, H), "vision2": nn.Linear(H, H),
            })
            self.cls = nn.Parameter(torch.zeros(1, 1, H))
            layer = nn.TransformerEncoderLayer(H, cfg.fusion_heads, 2 * H, cfg.dropout, batch_first=True)
            self.fusion_encoder = nn.TransformerEncoder(layer, cfg.fusion_layers, enable_nested_tensor=False)
            self.fusion = _head(H, H, cfg.dropout)
        elif cfg.fusion == "calibrated":
            pass  # no parameters: the weights come from the heads' calibrated probabilities (cfg.calibration)
        elif cfg.fusion == "late":  # late_weights: >= 0 with one > 0 (ModelConfig checks)
            self.register_buffer("late_weights", torch.tensor(cfg.late_weights, dtype=torch.float32), persistent=False)
        else:  # pragma: no cover - Literal checked by the config loader
            raise ValueError(f"unknown fusion {cfg.fusion!r}")
        # training-only view strengths (not part of the architecture or the checkpoint)
        self.augment_cfg: augment.AugmentConfig = augment.DEFAULT_AUGMENT

    def for_training(self, augment_cfg: augment.AugmentConfig, faces: bool = True) -> None:
        """Training-only set-up: the random views' strengths (``[augment]``), and, where the data has
        ``faces``, the frozen face networks' outputs remembered per crop (``ImageEncoder.remember``: the
        same faces come back every epoch). Neither changes the architecture, the checkpoint or a score."""
        self.augment_cfg = augment_cfg
        if faces and self.vision.mesh is not None:
            self.vision.remember()
        if self.vision.frozen_memo is not None:
            log.info("the frozen face networks' outputs are kept per crop (up to %d MiB)", self.vision.frozen_memo.budget >> 20)

    def keep_face_members(self, n: int) -> MMSAModel:
        """Score with the first ``n`` face branches of an ensemble only (``[scorer] face_members``: speed
        before the last point of face accuracy); 0, or ``n`` at least ``vision_members``: all of them. In place;
        returns the model. The face temperature stays the one fitted for the whole ensemble."""
        if 0 < n < self.cfg.vision_members:
            self.vision_members = nn.ModuleList(list(self.vision_members)[: n - 1])
            self.cfg = replace(self.cfg, vision_members=n)
        return self

    @classmethod
    def build(cls, cfg: ModelConfig, bert_dir: Path, pretrained_bert: bool = True) -> MMSAModel:
        return cls(cfg, TextEncoder.from_dir(bert_dir, pretrained=pretrained_bert))

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each unimodal branch (encoder + head), for per-modality gradient norms."""
        text = list(self.text.parameters()) + list(self.text_proj.parameters())
        return {
            "text": text + list(self.heads["text"].parameters()),
            "audio": list(self.audio.parameters()) + list(self.heads["audio"].parameters()),
            "vision": list(self.vision.parameters()) + list(self.heads["vision"].parameters())
            + list(self.vision_members.parameters()),
        }

    def _squash(self, raw: torch.Tensor) -> torch.Tensor:
        r = self.cfg.score_range
        return r * torch.tanh(raw.squeeze(-1) / r)

    def forward(
        self, x: ModelInputs, text_views: bool = False, views: Collection[str] = ("audio", "vision")
    ) -> ModelOutput:
        """Score a batch.

        In training, ``text_views`` also runs the second dropout pass of BERT for L_text, and
        ``views`` names the modalities among audio and vision whose second random view is
        computed for their contrastive loss.
        """
        B = x.batch_size
        dev = x.audio.device
        present = x.presence()  # (B, 3)
        feats: dict[str, torch.Tensor] = {}
        pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        train = self.training

        # text: h^c (Eq. 2); views = aspect segments (Eq. 3-4) or a second dropout pass
        h_text = torch.zeros(B, self.dims["text"], device=dev)
        idx = x.text_present.nonzero().squeeze(1)
        if has_rows(idx):
            rows = _rows(x.text, idx)
            tf = self.text(rows)
            put_rows(h_text, idx, self.text_proj(tf.h_c))
            if tf.h_seg1 is not None:
                pairs["text"] = (tf.h_seg1, tf.h_seg2)
            elif text_views and train:
                pairs["text"] = (tf.h_c, self.text(rows).h_c)
        feats["text"] = h_text

        # audio: clean map for scoring in evaluation, two random views in training (Eq. 8); Whisper's
        # statistics have no frames to crop or mask: their views are two dropout passes, as the text's
        h_audio = torch.zeros(B, self.dims["audio"], device=dev)
        idx = x.audio_present.nonzero().squeeze(1)
        if has_rows(idx):
            # mel bands first (if any), so that the views' frequency masks cover bands
            spec, mask = self.audio.to_bands(x.audio[idx]), x.audio_mask[idx]
            if train:  # each encoder draws its own random view (encoders.AudioEncoder.view)
                a1 = self.audio.encode(*self.audio.view(spec, mask, self.augment_cfg))
                if "audio" in views:
                    pairs["audio"] = (a1, self.audio.encode(*self.audio.view(spec, mask, self.augment_cfg)))
            else:
                a1 = self.audio.encode(spec, mask)
            put_rows(h_audio, idx, a1)
        feats["audio"] = h_audio

        # image: two views h_img1, h_img2 (Eq. 7 and 9)
        h_v1 = torch.zeros(B, self.dims["vision"], device=dev)
        h_v2 = torch.zeros_like(h_v1)
        members = [torch.zeros_like(h_v1) for _ in self.vision_members]  # further members' features (ensemble)
        idx = x.vision_present.nonzero().squeeze(1)
        if has_rows(idx):
            faces, fmask = x.faces[idx], x.face_mask[idx]
            shape = faces.shape
            flat = faces.reshape(-1, *shape[2:])
            if x.mesh is None:
                mesh = self.vision.window_mesh(faces, fmask, train)  # uncut crops, shared by both views
            else:  # the frozen networks' outputs given (per window)
                mesh = x.mesh.window_rows(idx, fmask)

            def view() -> torch.Tensor:  # one random view: a crop of the pixels or a shift of the trunk's map
                pixels = faces if self.vision.cnn_input == "mesh" else augment.image_view(flat, train, self.augment_cfg)
                return self.vision.encode_windows(pixels.reshape(shape), fmask, mesh, train)

            v1 = view()
            for h_k, member in zip(members, self.vision_members):
                put_rows(h_k, idx, member["encoder"].encode_windows(faces, fmask, mesh, train))
            if train and "vision" in views:
                v2 = view()
                pairs["vision"] = (v1, v2)
            else:
                v2 = v1
            put_rows(h_v1, idx, v1)
            put_rows(h_v2, idx, v2)
        feats["vision"] = (h_v1 + h_v2) / 2

        unimodal, logits = {}, {}
        for j, m in enumerate(MODALITIES):
            s = torch.full((B,), float("nan"), device=dev)
            rows_m = present[:, j].nonzero().squeeze(1)
            if m in self.classes:
                z = torch.full((B, self.classes[m]), float("nan"), device=dev)
                if has_rows(rows_m):
                    z_m = self.heads[m](feats[m][rows_m])
                    if m == "vision" and members:  # the ensemble: log of the members' mean class probabilities
                        z_m = torch.stack([z_m.log_softmax(-1), *(
                            k["head"](f[rows_m]).log_softmax(-1) for k, f in zip(self.vision_members, members))]).logsumexp(0) \
                            - math.log(1 + len(members))
                    put_rows(z, rows_m, z_m)
                    s[rows_m] = valence_score(z[rows_m].softmax(-1), self.cfg.score_range)
                logits[m] = z
            elif has_rows(rows_m):
                put_rows(s, rows_m, self._squash(self.heads[m](feats[m][rows_m])))
            unimodal[m] = s

        score = self._fuse(feats, h_v1, h_v2, present, unimodal, logits)
        return ModelOutput(score=score, unimodal=unimodal, presence=present, views=pairs, logits=logits)

    def _fuse(self, feats, h_v1, h_v2, present, unimodal, logits) -> torch.Tensor:
        pf = present.to(h_v1.dtype)
        if self.cfg.fusion == "concat":
            z = torch.cat([h_v1, feats["text"], h_v2, feats["audio"], pf], dim=1)  # Eq. 9
            return self._squash(self.fusion(z))
        if self.cfg.fusion == "attention":
            toks = torch.stack([
                self.tokens["text"](feats["text"]), self.tokens["audio"](feats["audio"]),
                self.tokens["vision1"](h_v1), self.tokens["vision2"](h_v2),
            ], dim=1)  # (B, 4, H)
            toks = torch.cat([self.cls.expand(toks.shape[0], -1, -1), toks], dim=1)  # (B, 5, H)
            keep = torch.cat([torch.ones_like(present[:, :1]), present, present[:, 2:3]], dim=1)
            out = self.fusion_encoder(toks, src_key_padding_mask=~keep)
            return self._squash(self.fusion(out[:, 0]))
        s = torch.stack([torch.nan_to_num(unimodal[m]) for m in MODALITIES], dim=1)
        if self.cfg.fusion == "calibrated":
            single = (s * pf).sum(1)  # the score of the one present modality
            probs = self.polarity_probs(unimodal, logits)
            if self.cfg.text_prior:
                prior = torch.tensor(self.cfg.text_prior, dtype=probs.dtype, device=probs.device)
                probs = torch.cat([divide_prior(probs[:, :1], prior / prior.sum()), probs[:, 1:]], 1)
            fused = product_of_experts(probs, fusion_weights(probs, pf, self.cfg.fusion_gate))
            return torch.where(pf.sum(1) > 1, valence_score(fused, self.cfg.score_range), single)
        w = self.late_weights[None] * pf  # (B, 3)
        return (w * s).sum(1) / w.sum(1).clamp_min(1e-6)

    def polarity_probs(self, unimodal: dict[str, torch.Tensor], logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 3 modalities, 3 classes): each head's calibrated negative / neutral / positive
        probabilities (``cfg.calibration`` temperatures; NaN rows where a modality is absent)."""
        out = []
        for m, t in zip(MODALITIES, self.cfg.calibration):
            if m in logits:
                out.append(torch.softmax(logits[m] / t, -1))
            else:
                out.append(score_probs(unimodal[m], t))
        return torch.stack(out, 1)
