"""mmsa.model: the paper's fusion network, its features and checkpoints.

Imports only torch, numpy, transformers and safetensors (never ``mmsa.training`` or
``mmsa.monitor``), so training and live scoring share one definition of the model.
"""

from .checkpoint import CheckpointInfo, LoadedModel, load_checkpoint, read_info, save_checkpoint
from .config import ModelConfig
from .errors import CheckpointError, ConfigError, MMSAError, ResourceError
from .features import DEFAULT_FEATURES, MODALITIES, FeatureConfig, ModelInputs, Sample, collate
from .losses import LossConfig, joint_loss
from .network import MMSAModel, ModelOutput
from .resources import resolve_bert, resolve_checkpoint
from .runtime import flush_denormals

__all__ = [
    "CheckpointError", "CheckpointInfo", "ConfigError", "DEFAULT_FEATURES", "FeatureConfig",
    "LoadedModel", "LossConfig", "MMSAError", "MMSAModel", "MODALITIES", "ModelConfig",
    "ModelInputs", "ModelOutput", "ResourceError", "Sample", "collate", "flush_denormals", "joint_loss",
    "load_checkpoint", "read_info", "resolve_bert", "resolve_checkpoint", "save_checkpoint",
]
