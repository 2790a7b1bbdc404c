"""Dataset readers: formats, row filters, deterministic splits and clear errors (file, line, column)."""

import csv
from pathlib import Path

import pytest

from mmsa.common.settings import from_dict
from mmsa.model.errors import ConfigError
from mmsa.training.config import SourceConfig
from mmsa.training.data import RAVDESS_ACTORS, VADER_SCALE, hash_fold, hash_split, read_source, video_part
from mmsa.training.errors import DataError

MOSI_HEADER = ["video_id", "clip_id", "text", "label", "annotation", "mode", "start", "end", "text_available"]


def write_csv(path: Path, header, rows) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def mosi_csv(tmp_path):
    return write_csv(tmp_path / "label.csv", MOSI_HEADER, [
        ["v1", 1, "it was really good", 2.4, "Positive", "train", 0.0, 1.0, 1],
        ["v1", 2, "", 0.2, "Positive", "train", 1.0, 1.0, 0],
        ["v1", 3, "Not GREAT, honestly!", -1.0, "Negative", "train", 1.0, 2.0, 1],
        ["v2", 1, "fine", 0.0, "Neutral", "valid", 0.0, 1.0, 1],
    ])


def test_mosi_text_only_filters_split_and_counts_rows_without_text(mosi_csv):
    data = read_source(SourceConfig(reader="mosi", labels=str(mosi_csv), split="train"))
    assert [r.id for r in data.records] == ["v1_1", "v1_3"]
    assert [r.label for r in data.records] == [2.4, -1.0]
    assert data.records[1].text == "Not GREAT, honestly!"  # normalised later, by the feature contract
    assert data.modalities == ("text",) and data.media_kind is None
    assert data.skipped == {"no_text": 1}
    assert data.records[0].where == f"{mosi_csv}:2"
    valid = read_source(SourceConfig(reader="mosi", labels=str(mosi_csv), split="valid", label_scale=0.5))
    assert [(r.id, r.label) for r in valid.records] == [("v2_1", 0.0)]


def test_empty_split_names_the_modes_present(mosi_csv):
    with pytest.raises(DataError, match=r"label\.csv: no rows for split 'test' \(modes in the file: train, valid\)"):
        read_source(SourceConfig(reader="mosi", labels=str(mosi_csv), split="test"))


@pytest.mark.parametrize("rows, message", [
    ([["v1", 1, "good", "abc", "Positive", "train", 0, 1, 1]], r"label\.csv:2: column 4 \(label\): expected a number, got 'abc'"),
    ([["v1", 1, "good", "nan", "Positive", "train", 0, 1, 1]], r"label\.csv:2: column 4 \(label\): expected a finite number"),
    ([["v1", 1, "good", 1.0, "Positive", "train", 0, 1, 1], ["v1", 2, "bad"]], r"label\.csv:3: expected 9 fields, got 3"),
])
def test_malformed_rows_name_file_line_and_column(tmp_path, rows, message):
    path = write_csv(tmp_path / "label.csv", MOSI_HEADER, rows)
    with pytest.raises(DataError, match=message):
        read_source(SourceConfig(reader="mosi", labels=str(path), split="train"))


def test_missing_column_and_missing_file(tmp_path):
    path = write_csv(tmp_path / "label.csv", ["video_id", "clip_id", "text", "mode"], [["v", 1, "x", "train"]])
    with pytest.raises(DataError, match=r"label\.csv:1: missing column 'label' \(columns: video_id, clip_id, text, mode\)"):
        read_source(SourceConfig(reader="mosi", labels=str(path), split="train"))
    with pytest.raises(DataError, match="label file not found"):
        read_source(SourceConfig(reader="mosi", labels=str(tmp_path / "none.csv"), split="train"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv:1: empty label file"):
        read_source(SourceConfig(reader="mosi", labels=str(empty), split="train"))


def test_mmsa_raw_missing_media_names_the_label_line(tmp_path):
    path = write_csv(tmp_path / "label.csv", ["video_id", "clip_id", "text", "label", "annotation", "mode"],
                     [["vidA", 7, "hello", 1.0, "Positive", "test"]])
    with pytest.raises(DataError, match=r"label\.csv:2: media file not found: .*Raw/vidA/7\.mp4"):
        read_source(SourceConfig(reader="mmsa-raw", labels=str(path), split="test"))
    # without media the same file is usable as text-only data
    data = read_source(SourceConfig(reader="mmsa-raw", labels=str(path), split="test", modalities=("text",)))
    assert data.records[0].text == "hello" and data.records[0].media is None


def test_mosei_reader_uses_the_chosen_transcript_column(tmp_path):
    header = ["video_id", "start", "end", "text", "asr_text", "label", "happy", "mode"]
    path = write_csv(tmp_path / "label_valid.csv", header, [
        ["abc", "1.5", "3.0", "It's GOOD.", "its good", "1.0", "0.5", "valid"],
        ["abc", "3.0", "4.0", "Bad.", "bad", "-0.5", "0", "valid"],
    ])
    data = read_source(SourceConfig(reader="mosei", labels=str(path), split="valid"))
    assert [r.id for r in data.records] == ["abc_1.5_3.0", "abc_3.0_4.0"]
    assert data.records[0].text == "It's GOOD."
    asr = read_source(SourceConfig(reader="mosei", labels=str(path), split="valid", text_column="asr_text"))
    assert asr.records[0].text == "its good"


def test_vader_rescales_to_the_mosi_scale_and_splits_by_hash(tmp_path):
    folder = tmp_path / "vader"
    folder.mkdir()
    lines = [f"{i}\t{(i % 9) - 4}\tsentence number {i} is here" for i in range(1, 201)]
    (folder / "tweets_GroundTruth.txt").write_text("\n".join(lines) + "\n")
    (folder / "tweets_anonDataRatings.txt").write_text("not read\n")
    every = read_source(SourceConfig(reader="vader", labels=str(folder), split="all"))
    assert len(every.records) == 200
    first = every.records[0]
    assert first.id == "tweets:1" and first.label == pytest.approx(-3 * VADER_SCALE) and first.label == pytest.approx(-2.25)
    assert max(r.label for r in every.records) == pytest.approx(3.0)
    parts = {s: {r.id for r in read_source(SourceConfig(reader="vader", labels=str(folder), split=s)).records}
             for s in ("train", "valid", "test")}
    assert set.union(*parts.values()) == {r.id for r in every.records}
    assert not (parts["train"] & parts["valid"]) and not (parts["train"] & parts["test"])
    assert 140 <= len(parts["train"]) <= 180  # about 80 %
    (folder / "tweets_GroundTruth.txt").write_text("1\t0.5\tok\n2\tmuch\tbad value\n")
    with pytest.raises(DataError, match=r"tweets_GroundTruth\.txt:2: column 2 \(mean\): expected a number, got 'much'"):
        read_source(SourceConfig(reader="vader", labels=str(folder), split="all"))


def test_hash_split_is_stable():
    # pinned values: the split of a row must never change between versions or machines
    assert [hash_split(f"row{i}") for i in range(10)] == ["valid"] + ["train"] * 8 + ["test"]
    counts = {s: sum(hash_split(f"k{i}") == s for i in range(5000)) for s in ("train", "valid", "test")}
    assert 3800 < counts["train"] < 4200 and 350 < counts["valid"] < 650 and 350 < counts["test"] < 650


def test_ravdess_actor_splits_are_disjoint_and_balanced():
    parts = [set(RAVDESS_ACTORS[s]) for s in ("train", "valid", "test")]
    assert set.union(*parts) == set(range(1, 21)) and sum(map(len, parts)) == 20
    for p in parts:  # odd actors are male: each part is half male, half female
        assert sum(a % 2 for a in p) * 2 == len(p)


def test_ravdess_reader_targets_and_surprise(ravdess_like):
    train = read_source(SourceConfig(reader="ravdess", labels=str(ravdess_like), split="train"))
    assert {r.id.split("/")[0] for r in train.records} == {"Actor_01", "Actor_02"}
    assert {r.emotion: r.label for r in train.records} == {"happy": 2.0, "sad": -2.0, "neutral": 0.0}
    assert train.skipped == {"no_valence": 2} and train.modalities == ("audio",)
    valid = read_source(SourceConfig(reader="ravdess", labels=str(ravdess_like), split="valid"), keep_unrated=True)
    assert {r.id.split("/")[0] for r in valid.records} == {"Actor_13"}
    assert [r.valence for r in valid.records if r.emotion == "surprised"] == [None]
    chosen = read_source(SourceConfig(reader="ravdess", labels=str(ravdess_like), split="train", actors=(13,)))
    assert {r.id.split("/")[0] for r in chosen.records} == {"Actor_13"}
    with pytest.raises(DataError, match="no rows for split 'test'"):
        read_source(SourceConfig(reader="ravdess", labels=str(ravdess_like), split="test"))


def test_fer_reader_unknown_emotion(fer_like, tmp_path):
    data = read_source(SourceConfig(reader="fer2013", labels=str(fer_like), split="all"))
    assert data.modalities == ("vision",) and data.media_kind == "image"
    assert data.skipped == {"no_valence": 6}  # 30 rows, every 5th is surprise
    bad = write_csv(tmp_path / "labels.csv", ["path", "emotion"], [["a.jpg", "contempt"]])
    with pytest.raises(DataError, match=r"labels\.csv:2: column 2 \(emotion\): unknown emotion 'contempt'"):
        read_source(SourceConfig(reader="fer2013", labels=str(bad), split="all"))


def test_cross_validation_folds_partition_a_split(fer_like):
    """``fold = "k/n"`` keeps fold k of a split's rows, ``exclude_fold`` the others: each row is held out
    exactly once over the n folds, never both trained on and held out in one fold; stable hashes."""
    whole = {r.id for r in read_source(SourceConfig(reader="fer2013", labels=str(fer_like), split="all")).records}
    held_out: list[str] = []
    for k in (1, 2, 3):
        held = {r.id for r in read_source(SourceConfig(reader="fer2013", labels=str(fer_like), split="all",
                                                       fold=f"{k}/3")).records}
        rest = {r.id for r in read_source(SourceConfig(reader="fer2013", labels=str(fer_like), split="all",
                                                       exclude_fold=f"{k}/3")).records}
        assert held and rest and not held & rest and held | rest == whole
        assert all(hash_fold(i, 3) == k for i in held)
        held_out += held
    assert sorted(held_out) == sorted(whole)
    assert [hash_fold(f"row{i}", 5) for i in range(8)] == [1, 3, 3, 4, 3, 2, 3, 2]  # the same on every machine
    assert {hash_fold(f"row{i}", 5) for i in range(200)} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(("keys", "message"), [
    ({"fold": "0/5"}, r'fold: \'0/5\' must be "k/n" with 1 <= k <= n and n >= 2'),
    ({"fold": "6/5"}, r"fold: \'6/5\' must be"),
    ({"exclude_fold": "1/1"}, r"exclude_fold: \'1/1\' must be"),
    ({"fold": "three"}, r"fold: \'three\' must be"),
    ({"fold": "1/5", "exclude_fold": "2/5"}, "give one of them"),
])
def test_a_malformed_fold_names_the_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SourceConfig, {"reader": "fer2013", "labels": "x.csv", "split": "train", **keys})


def test_a_held_out_fold_may_validate_beside_the_others_but_not_overlap_them(fer_like, tmp_path):
    from mmsa.training.config import load_config

    def config(train_part: str, valid_part: str) -> Path:
        path = tmp_path / "cv.toml"
        path.write_text(f"""[train]\nselect = "last"\n
[[data.train]]\nreader = "fer2013"\nlabels = "{fer_like}"\nsplit = "train"\n{train_part}\n
[[data.valid]]\nname = "held"\nreader = "fer2013"\nlabels = "{fer_like}"\nsplit = "train"\n{valid_part}\n""")
        return path

    cfg, _ = load_config(config('exclude_fold = "2/5"', 'fold = "2/5"'))
    assert cfg.data.valid[0].folds_kept == (frozenset({2}), 5) and cfg.data.train[0].folds_kept[0] == {1, 3, 4, 5}
    with pytest.raises(ConfigError, match="shares rows with training source .* splits 'train' without fold 2/5 and "
                                          "'train' fold 3/5"):
        load_config(config('exclude_fold = "2/5"', 'fold = "3/5"'))


def test_videos_split_a_fold_by_speaker(tmp_path):
    """``videos``: one fold (MOSEI valid) split by a fixed hash of the video id into a training part
    (about 70 %) and a held-out part; no video is in both, and the split never changes."""
    header = ["video_id", "start", "end", "text", "label", "mode"]
    rows = [[f"vid{v}", f"{k}.0", f"{k + 1}.0", f"clip {k} of {v}", 0.5, "valid"] for v in range(60) for k in range(3)]
    path = write_csv(tmp_path / "label_valid.csv", header, rows)
    parts = {p: read_source(SourceConfig(reader="mosei", labels=str(path), split="valid", videos=p)).records
             for p in ("train", "heldout")}
    videos = {p: {r.id.rsplit("_", 2)[0] for r in recs} for p, recs in parts.items()}
    assert not videos["train"] & videos["heldout"] and len(videos["train"] | videos["heldout"]) == 60
    assert 30 <= len(videos["train"]) <= 54  # about 70 % of 60 videos
    assert all(len(recs) == 3 * len(videos[p]) for p, recs in parts.items())  # whole videos
    assert [video_part(f"vid{v}") for v in range(6)] == ["heldout", "heldout", "train", "heldout", "train", "train"]
    with pytest.raises(ConfigError, match="videos: only for sources split by a mode column"):
        from_dict(SourceConfig, {"reader": "ravdess", "labels": "x.csv", "split": "train", "videos": "train"})


def test_aspect_column_reaches_the_model_input(tmp_path):
    """An optional ``aspect`` column: ``[CLS] text [SEP] aspect [SEP]``, the aspect's spans in both segments."""
    from transformers import AutoTokenizer

    from mmsa.model import resolve_bert
    from mmsa.model.features import collate
    from mmsa.training.cache import featurize

    path = write_csv(tmp_path / "label.csv", MOSI_HEADER + ["aspect"], [
        ["v1", 1, "the food was great but the service was slow", 1.0, "Positive", "train", 0, 1, 1, "service"],
        ["v1", 2, "nice view", 2.0, "Positive", "train", 0, 1, 1, ""],
    ])
    data = read_source(SourceConfig(reader="mosi", labels=str(path), split="train"))
    assert [r.aspect for r in data.records] == ["service", None]
    store = featurize(data)
    tok = AutoTokenizer.from_pretrained(resolve_bert("packaged"))
    batch = collate([store[0], store[1]], tok)
    ids = batch.text.input_ids[0].tolist()
    service = tok("service", add_special_tokens=False)["input_ids"]
    (s1, e1), (s2, e2) = batch.text.seg1[0].tolist(), batch.text.seg2[0].tolist()
    assert ids[s1:e1] == service and ids[s2:e2] == service and s2 > s1
    assert batch.text.token_type_ids[0, s2] == 1 and batch.text.token_type_ids[0, s1] == 0


def _fold_sides(cfg_of, n: int, group_of) -> None:
    """For every fold k of n: the held-out rows (``fold``) and the training rows (``exclude_fold``) share no
    group (video, actor), every row is on exactly one side, and over the folds every group is held out once."""
    whole = read_source(cfg_of()).records
    held_groups: list[str] = []
    for k in range(1, n + 1):
        held, rest = read_source(cfg_of(fold=f"{k}/{n}")).records, read_source(cfg_of(exclude_fold=f"{k}/{n}")).records
        assert not {group_of(r) for r in held} & {group_of(r) for r in rest}, f"fold {k}/{n}: a group on both sides"
        assert sorted(r.id for r in held + rest) == sorted(r.id for r in whole)
        held_groups += sorted({group_of(r) for r in held})
    assert sorted(held_groups) == sorted({group_of(r) for r in whole})


@pytest.mark.parametrize("reader", ["mosi", "mosei", "mmsa-raw"])
def test_cmu_folds_keep_each_video_on_one_side(tmp_path, reader):
    """``fold`` / ``exclude_fold`` of mosi, mosei, mmsa-raw: the clips of one video (one speaker) fall in one
    fold, so a cross-validation never trains on a speaker it is scored on."""
    if reader == "mosei":
        header = ["video_id", "start", "end", "text", "label", "mode"]
        rows = [[f"vid{v}", f"{k}.0", f"{k + 1}.0", f"clip {k}", 0.5, "train"] for v in range(30) for k in range(4)]
    else:
        header = ["video_id", "clip_id", "text", "label", "mode"]
        rows = [[f"vid{v}", k, f"clip {k}", 0.5, "train"] for v in range(30) for k in range(4)]
    path = write_csv(tmp_path / "label.csv", header, rows)

    def cfg_of(**kw):
        return SourceConfig(reader=reader, labels=str(path), split="train", modalities=("text",), **kw)

    _fold_sides(cfg_of, 5, lambda r: r.id.split("_")[0])
    assert hash_fold("video:vid0", 5) == hash_fold(read_source(cfg_of()).records[0].fold_key, 5)


def test_ravdess_folds_keep_each_actor_on_one_side(tmp_path):
    rows = []
    for actor in range(1, 21):
        for e_code, emotion in (("03", "happy"), ("04", "sad"), ("01", "neutral")):
            rel = f"Actor_{actor:02d}/03-01-{e_code}-01-01-01-{actor:02d}.wav"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(b"")  # the reader only checks that the file is there
            rows.append([rel, emotion, f"{actor:02d}"])
    path = write_csv(tmp_path / "labels.csv", ["path", "emotion", "actor"], rows)

    def cfg_of(**kw):
        return SourceConfig(reader="ravdess", labels=str(path), split="all", **kw)

    _fold_sides(cfg_of, 3, lambda r: r.id.split("/")[0])
    train = read_source(SourceConfig(reader="ravdess", labels=str(path), split="train", fold="1/3")).records
    assert {r.fold_key for r in train} <= {f"actor:{a}" for a in RAVDESS_ACTORS["train"]}
