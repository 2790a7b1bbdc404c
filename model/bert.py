"""A plain-torch BERT encoder that loads Hugging Face BERT folders without importing
``transformers``' modelling code.

Why: ``transformers.models.bert.modeling_bert`` pulls in ``torch.distributed.tensor``,
``torch._dynamo`` and the loss zoo on import, about 4 s of a 2-core CPU, which was most of the
time ``mmsa-monitor --model default`` took to load its model (docs/default-model.md). This
module is the same network (post-LayerNorm BERT: absolute positions, token types, exact GELU,
scaled dot-product attention) with the same parameter names, so a state dict moves between it
and ``transformers.BertModel`` unchanged, and every checkpoint stays compatible.

It serves folders whose ``config.json`` says ``model_type = "bert"`` with absolute positions and
a plain GELU / ReLU activation (MiniLM, bert-base/large-uncased and the like); anything else
(RoBERTa, DeBERTa, ...) goes through ``transformers.AutoModel`` (``TextEncoder.from_dir``).
Weights: ``model.safetensors`` or ``pytorch_model.bin``; a ``bert.`` prefix and the old
``gamma`` / ``beta`` LayerNorm names are accepted; pooler and pre-training heads are ignored.
``tests/model/test_bert.py`` checks the outputs against ``transformers.BertModel``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def read(cls, bert_dir: Path) -> BertConfig | None:
        """The folder's config, or None when this module does not implement that model."""
        try:
            raw = json.loads((Path(bert_dir) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        if raw.get("model_type") != "bert" or raw.get("position_embedding_type", "absolute") != "absolute":
            return None
        if raw.get("hidden_act", "gelu") not in ACTIVATIONS or raw.get("is_decoder") or raw.get("add_cross_attention"):
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names and v is not None})


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_ids[:, : input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))  # (B, L, D)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not a multiple of {cfg.num_attention_heads} heads")
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, L, self.heads, D // self.heads).transpose(1, 2)  # (B, H, L, D/H)

        out = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        return out.transpose(1, 2).reshape(B, L, D)


class BertSelfOutput(nn.Module):
    """dense -> dropout -> LayerNorm(+ residual); also the FFN's output (``BertOutput``)."""

    def __init__(self, cfg: BertConfig, d_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class Bert(nn.Module):
    """``BertModel`` without the pooler: (input_ids, attention_mask, token_type_ids) -> (B, L, D) states."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self._init_weights()

    def _init_weights(self) -> None:
        """BERT's initialisation (normal(0, 0.02), zero biases, unit LayerNorms), as transformers does it."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L): True where a key may be attended to
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x

    @classmethod
    def from_dir(cls, bert_dir: Path, pretrained: bool = True) -> Bert | None:
        """The folder's BERT (weights loaded when ``pretrained``), or None when it is not a plain BERT."""
        cfg = BertConfig.read(bert_dir)
        if cfg is None:
            return None
        model = cls(cfg)
        if pretrained:
            state = _read_weights(Path(bert_dir))
            own = model.state_dict()
            missing = sorted(set(own) - set(state))
            if missing:
                raise ValueError(f"{bert_dir}: the BERT weights lack {missing[0]} (and {len(missing) - 1} more)")
            model.load_state_dict({k: state[k] for k in own})
        return model


def _read_weights(bert_dir: Path) -> dict[str, torch.Tensor]:
    st, pt = bert_dir / "model.safetensors", bert_dir / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        raw = load_file(str(st))
    elif pt.is_file():
        raw = torch.load(pt, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{bert_dir}: no model.safetensors or pytorch_model.bin")
    out = {}
    for key, value in raw.items():
        key = key.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = value.float() if value.is_floating_point() else value
    return out
