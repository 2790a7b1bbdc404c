"""The default model's earlier stages, reassembled from the shipped checkpoint, so that a later stage can
be rebuilt without rebuilding the ones before it (``make default-model FROM=3`` or ``FROM=4`` need
``runs/default-model/2_text`` and ``3_audio``, which are not in git).

Each stage of ``make default-model`` trains one part (``train.trainable``) and leaves the others as
they were; a part no stage has trained yet holds the initial weights that stage 1 draws
(``seed_everything(seed)`` then ``MMSAModel.build``, ``training.trainer._build_model``). So the checkpoint
of stage k is the shipped model's parts trained by stages 1..k and stage 1's initial weights of the
rest (stage 3 replaces the audio branch: its fresh weights are drawn by stage 3 itself), stored as the
stages store them (float16, BERT as a delta): exactly what the stage wrote, if the
shipped model was built with the code and configs of this checkout. Stage 3 and the audio twin
(trained from stage 2 on the initial audio weights) check it: retrained at one thread they give the
shipped audio branch and the card's twin figures again (docs/default-model.md, "Build").

    .venv/bin/python examples/reassemble_stages.py            # -> runs/default-model/{2_text,3_audio}/model.safetensors
    make default-model FROM=3 THREADS=1                        # then the twin, stages 3 and 4 and the fit
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmsa.model import MMSAModel, load_checkpoint, save_checkpoint
from mmsa.model.resources import resolve_bert
from mmsa.training.config import load_config
from mmsa.training.optim import part_of
from mmsa.training.trainer import seed_everything

CONFIGS = Path("configs/train/default")
STAGES = {"2_text": ("1_text_vader", "2_text"), "3_audio": ("1_text_vader", "2_text", "3_audio")}
"""Each reassembled stage and the stages whose trained parts it holds."""


def reassemble(shipped: str, out_dir: Path, configs: Path = CONFIGS) -> list[Path]:
    loaded = load_checkpoint(shipped)
    trained = loaded.model.state_dict()
    stages = loaded.info.training.get("stages", [])
    first, _ = load_config(configs / "1_text_vader.toml")
    seed_everything(first.train.seed)  # as _build_model does before every stage's MMSAModel.build
    initial = MMSAModel.build(first.model, resolve_bert(first.model.bert)).state_dict()
    written = []
    for name, chain in STAGES.items():
        cfg, _ = load_config(configs / f"{chain[-1]}.toml")
        parts = {p for stage in chain for p in load_config(configs / f"{stage}.toml")[0].train.trainable}
        model = MMSAModel.build(cfg.model, resolve_bert(cfg.model.bert))
        model.load_state_dict({k: trained[k] if part_of(k) in parts else initial[k] for k in model.state_dict()})
        path = out_dir / name / "model.safetensors"
        save_checkpoint(path, model.eval(), name=f"default-{name.replace('_', '-')}", training={
            "stages": stages[: len(chain)], "reassembled_from": loaded.info.tag,
            "command": " ".join(["examples/reassemble_stages.py", *sys.argv[1:]])},
            bert_delta=cfg.checkpoint.bert_delta, half=cfg.checkpoint.half)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="the shipped checkpoint (default: the embedded default model)")
    p.add_argument("--out", type=Path, default=Path("runs/default-model"), help="the runs folder of make default-model")
    args = p.parse_args(argv)
    for path in reassemble(args.model, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
