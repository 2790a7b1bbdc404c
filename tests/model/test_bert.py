"""mmsa.model.bert: the same network as transformers.BertModel, loaded from the same folders."""

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForPreTraining

from mmsa.model import resolve_bert
from mmsa.model.bert import Bert
from mmsa.model.encoders import TextEncoder

SENTENCES = ["i loved this movie , truly wonderful", "it was terrible", "okay i guess , nothing special at all really"]


def hf_and_ours(bert_dir):
    hf = AutoModel.from_pretrained(bert_dir, add_pooling_layer=False).eval()
    ours = Bert.from_dir(bert_dir).eval()
    return hf, ours


def test_packaged_minilm_matches_transformers_bert():
    bert_dir = resolve_bert()
    hf, ours = hf_and_ours(bert_dir)
    tok = AutoTokenizer.from_pretrained(bert_dir)
    batch = tok(SENTENCES, ["movie", "", "okay"], padding=True, return_tensors="pt")  # padding, two segments
    with torch.no_grad():
        want = hf(**batch).last_hidden_state
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    mask = batch["attention_mask"].bool()
    assert torch.allclose(got[mask], want[mask], atol=2e-5)
    assert set(ours.state_dict()) == set(hf.state_dict())  # checkpoints move between them unchanged


def test_gradients_match_in_training_mode_without_dropout(tiny_bert):
    hf, ours = hf_and_ours(tiny_bert)
    for m in (hf, ours):
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    ours.encoder.layer.apply(lambda m: setattr(m, "dropout_p", 0.0) if hasattr(m, "dropout_p") else None)
    ids = torch.tensor([[101, 2000, 2001, 102, 0], [101, 2003, 2004, 2005, 102]])
    mask = (ids != 0).long()
    hf(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()].sum().backward()
    ours(ids, mask)[mask.bool()].sum().backward()
    g_hf = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, g_hf[name].grad, atol=1e-4), name


def test_prefixed_pytorch_bin_with_old_layernorm_names(tmp_path, tiny_bert):
    """bert-base-uncased style: pytorch_model.bin of BertForPreTraining, ``bert.`` prefix, gamma/beta."""
    cfg = BertConfig.from_pretrained(tiny_bert)
    full = BertForPreTraining(cfg)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in full.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    ours = Bert.from_dir(tmp_path)
    assert torch.equal(ours.encoder.layer[0].output.LayerNorm.weight, full.bert.encoder.layer[0].output.LayerNorm.weight)
    assert torch.equal(ours.embeddings.word_embeddings.weight, full.bert.embeddings.word_embeddings.weight)


def test_other_architectures_go_through_automodel(tmp_path, tiny_bert):
    cfg = json.loads((tiny_bert / "config.json").read_text())
    assert Bert.from_dir(tiny_bert) is not None
    for change in ({"position_embedding_type": "relative_key"}, {"hidden_act": "swish"}, {"model_type": "roberta"}):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
        assert Bert.from_dir(tmp_path) is None, change
    rel = tmp_path / "rel"
    rel.mkdir()
    hf = AutoModel.from_config(BertConfig(**{**cfg, "position_embedding_type": "relative_key"}), add_pooling_layer=False)
    hf.save_pretrained(rel)
    enc = TextEncoder.from_dir(rel)
    assert not isinstance(enc.bert, Bert) and enc.dim == cfg["hidden_size"]


def test_weights_missing_a_tensor_are_refused(tmp_path, tiny_bert):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_bert / "model.safetensors"))
    state.pop(next(k for k in state if "layer.0.attention.self.query.weight" in k))
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(ValueError, match="lack encoder.layer.0.attention.self.query.weight"):
        Bert.from_dir(tmp_path)

