"""Caption retrieval family: hand-computed ranks, a planted per-group corruption found, rows through the runner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench import schema
from workbench.audit.core import ModelEmbeddings, compute_audit
from workbench.audit.families import FAMILIES, METRIC_INFO, retrieval
from workbench.audit.families.retrieval import (
    IMAGE_TO_TEXT,
    TEXT_TO_IMAGE,
    image_to_text_ranks,
    retrieval_ranks,
    text_to_image_ranks,
)
from workbench.audit.spec import parse_audit_spec

I2T, T2I = IMAGE_TO_TEXT, TEXT_TO_IMAGE

# Four query pairs, three distinct captions; rows 2 and 3 share caption 2.
SIMILARITY = np.array([
    [0.9, 0.5, 0.1],
    [0.8, 0.7, 0.2],
    [0.3, 0.6, 0.4],
    [0.7, 0.9, 0.2],
])
CAPTION_INDEX = np.array([0, 1, 2, 2])


def value(results: pd.DataFrame, metric: str, **where) -> pd.Series:
    rows = results[results["metric"] == metric]
    for key, wanted in where.items():
        rows = rows[rows[key] == wanted]
    assert len(rows) == 1, (metric, where, len(rows))
    return rows.iloc[0]


def test_ranks_by_hand_on_a_fixed_similarity_matrix():
    # image -> text: the own caption's score against each row's three gallery scores (ties count against).
    # row 0: 0.9 is the top -> 1; row 1: 0.8 >= 0.7 -> 2; row 2: 0.6 >= 0.4 -> 2; row 3: 0.7, 0.9 >= 0.2 -> 3.
    i2t = image_to_text_ranks(SIMILARITY, CAPTION_INDEX)
    assert i2t.tolist() == [1, 2, 2, 3]
    # text -> image, caption 0 (row 0, 0.9) against rows 1-3 (0.8, 0.3, 0.7) -> 1; caption 1 (row 1, 0.7) against
    # rows 0, 2, 3 (0.5, 0.6, 0.9) -> 2; caption 2 against rows 0, 1 only (0.1, 0.2; rows 2 and 3 share it):
    # row 2 (0.4) -> 1, row 3 (0.2, tied with row 1) -> 2.
    t2i = text_to_image_ranks(SIMILARITY, CAPTION_INDEX)
    assert t2i.tolist() == [1, 2, 1, 2]
    assert (i2t <= 1).mean() == 0.25 and (i2t <= 2).mean() == 0.75 and i2t.mean() == 2.0
    assert (t2i <= 1).mean() == 0.5 and t2i.mean() == 1.5


def test_docstring_examples():
    import doctest

    result = doctest.testmod(retrieval, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 3


def test_chunked_ranks_equal_the_whole_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    image = _unit(rng.standard_normal((50, 8)))
    captions = _unit(rng.standard_normal((20, 8)))
    index = rng.integers(0, 20, size=50)
    whole = retrieval_ranks(image, captions, index)
    monkeypatch.setattr(retrieval, "_CHUNK", 7)
    chunked = retrieval_ranks(image, captions, index)
    sim = image @ captions.T
    assert np.array_equal(whole[I2T], image_to_text_ranks(sim, index))
    assert np.array_equal(whole[T2I], text_to_image_ranks(sim, index))
    assert all(np.array_equal(whole[d], chunked[d]) for d in (I2T, T2I))


SPEC = """
name: retrieval_fixture
attributes:
  - {column: group, groups: [A, B], reference: A}
min_group_size: 2
policy:
  checks:
    - {name: recall5_ratio, metric: retrieval_recall_min_ratio, attribute: group, label: image_to_text, k: 5,
       warn: 0.9, fail: 0.8}
bootstrap: {n_boot: 200, seed: 0}
"""


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _hand_inputs() -> tuple[pd.DataFrame, ModelEmbeddings]:
    """12 images (one-hot), 12 distinct captions. Group A's caption is its image's vector: rank 1 both ways.
    Group B's caption i is 0.6 e_i + 0.8 e_next(i) (next B image, cyclic): image i meets the caption of the
    previous B image at 0.8 > 0.6, and caption i meets image next(i) at 0.8: rank 2 both ways."""
    n = 12
    image = np.eye(n, dtype=np.float32)
    groups = np.array(["A", "B"] * 6)
    b_rows = np.flatnonzero(groups == "B")
    captions = image.copy()
    for pos, i in enumerate(b_rows):
        nxt = b_rows[(pos + 1) % len(b_rows)]
        captions[i] = 0.6 * image[i] + 0.8 * image[nxt]
    texts = [f"caption {i}" for i in range(n)]
    table = pd.DataFrame({"row": np.arange(n), "group": groups, "caption": texts})
    return table, ModelEmbeddings(image=image, text={t: captions[i] for i, t in enumerate(texts)})


def test_family_rows_by_hand_per_group_and_overall():
    table, emb = _hand_inputs()
    res = compute_audit(parse_audit_spec(yaml_load(SPEC)), table, {"model": emb}).results
    for direction in (I2T, T2I):
        overall = dict(model="model", label=direction, group=schema.OVERALL, attribute="")
        assert value(res, "retrieval_recall", k=1, **overall)["value"] == pytest.approx(0.5)
        assert value(res, "retrieval_mean_rank", **overall)["value"] == pytest.approx(1.5)
        assert value(res, "retrieval_mean_rank", **overall)["n"] == 12
        for group, r1, rank in (("A", 1.0, 1.0), ("B", 0.0, 2.0)):
            where = dict(model="model", label=direction, attribute="group", group=group)
            row = value(res, "retrieval_recall", k=1, **where)
            assert row["value"] == r1 and row["n"] == 6
            assert row["ci_low"] <= r1 <= row["ci_high"] and row["ci_high"] > row["ci_low"]  # Wilson: never zero width
            assert value(res, "retrieval_recall", k=5, **where)["value"] == 1.0
            assert value(res, "retrieval_mean_rank", **where)["value"] == rank
        assert value(res, "retrieval_recall_difference", model="model", label=direction, attribute="group", group="B",
                      k=1)["value"] == -1.0
        assert value(res, "retrieval_recall_min_ratio", model="model", label=direction, attribute="group",
                     k=1)["value"] == 0.0
        assert value(res, "retrieval_recall_min_ratio", model="model", label=direction, attribute="group",
                     k=5)["value"] == 1.0
    # 12 distinct captions: k=10 is still below the gallery size, so every k has rows.
    assert set(res.loc[res.metric == "retrieval_recall", "k"]) == {1, 5, 10}


def test_metrics_declared_once_by_the_family():
    family = next(f for f in FAMILIES if f.name == "retrieval")
    names = {m.name for m in family.metrics}
    assert names == {"retrieval_recall", "retrieval_recall_difference", "retrieval_recall_min_ratio",
                     "retrieval_mean_rank"}
    assert names <= set(schema.METRICS)
    assert METRIC_INFO["retrieval_recall"].direction == "lower_is_worse"
    assert METRIC_INFO["retrieval_mean_rank"].direction == "higher_is_worse"


def test_policy_check_on_the_worst_over_best_recall():
    table, emb = _hand_inputs()
    res = compute_audit(parse_audit_spec(yaml_load(SPEC)), table, {"model": emb})
    (check,) = res.summary["checks"]
    # Recall@5 is 1 for both groups: ratio 1 on a zero-width interval (every resample gives 1) cannot pass.
    assert check["name"] == "recall5_ratio" and check["value"] == 1.0 and check["verdict"] == "inconclusive"


def _planted(seed: int = 0):
    """300 pairs in three skin tones; tuned = base except the captions of 'dark' images lose most of their signal."""
    rng = np.random.default_rng(seed)
    n, d = 300, 64
    tones = np.repeat(["light", "medium", "dark"], 100)
    sex = np.tile(["female", "male"], 150)
    image = _unit(rng.standard_normal((n, d)))
    noise = rng.standard_normal((n, d))
    clean = _unit(image + 0.28 * noise)  # own-pair cosine about 0.4, other pairs about 0 +- 0.13
    corrupted = clean.copy()
    dark = tones == "dark"
    corrupted[dark] = _unit(0.12 * image[dark] + _unit(rng.standard_normal((int(dark.sum()), d))))
    texts = [f"photo {i}" for i in range(n)]
    table = pd.DataFrame({"row": np.arange(n), "skin_tone": tones, "sex": sex, "caption": texts})
    emb = {
        "base": ModelEmbeddings(image=image, text={t: clean[i] for i, t in enumerate(texts)}),
        "tuned": ModelEmbeddings(image=image, text={t: corrupted[i] for i, t in enumerate(texts)}),
    }
    return table, emb


PLANTED_SPEC = """
name: retrieval_planted
attributes:
  - {column: skin_tone, groups: [light, medium, dark], reference: light}
  - {column: sex, groups: [female, male], reference: female}
intersections: [[skin_tone, sex]]
min_group_size: 30
policy:
  checks:
    - {name: recall5_ratio, metric: retrieval_recall_min_ratio, attribute: skin_tone, label: image_to_text, k: 5,
       warn: 0.9, fail: 0.8}
bootstrap: {n_boot: 400, seed: 0}
"""


def test_planted_caption_corruption_lowers_that_groups_recall():
    table, emb = _planted()
    res = compute_audit(parse_audit_spec(yaml_load(PLANTED_SPEC)), table, emb)
    r = res.results
    for direction in (I2T, T2I):
        where = dict(metric="retrieval_recall", attribute="skin_tone", label=direction, k=5)
        base_dark = value(r, model="base", group="dark", **where)
        assert base_dark["value"] > 0.7 and base_dark["n"] == 100
        drop = value(r, model="delta", group="dark", **where)
        # The planted drop: tuned minus base for 'dark', paired resamples, interval below 0.
        assert drop["value"] < -0.3 and drop["ci_high"] < 0
        assert drop["value"] == pytest.approx(value(r, model="tuned", group="dark", **where)["value"] - base_dark["value"])
        # Untouched groups move far less (their gallery lost some competitors, nothing else changed).
        for g in ("light", "medium"):
            assert abs(value(r, model="delta", group=g, **where)["value"]) < 0.1
        # Within the tuned model, dark against the reference light: a difference excluding 0 as well.
        diff = value(r, "retrieval_recall_difference", model="tuned", attribute="skin_tone", group="dark",
                     label=direction, k=5)
        assert diff["ci_high"] < 0
        # Intersections carry the drop too.
        assert value(r, model="delta", metric="retrieval_recall", attribute="skin_tone*sex", group="dark*male",
                     label=direction, k=5)["ci_high"] < 0
    # The policy check on the worst group's Recall@5 over the best's fails for the tuned model.
    (check,) = [c for c in res.summary["checks"] if c["name"] == "recall5_ratio"]
    assert check["model"] == "tuned" and check["verdict"] == "fail" and check["value"] < 0.8
    # The sentence names the worse group, the better one and both n.
    assert check["worse_group"] == "dark" and check["direction_text"].startswith("dark below ")
    assert f"image-to-text Recall@5 of dark (skin_tone) queries is {check['value']:.2f}x" in check["sentence"]
    assert "n=100 vs 100" in check["sentence"]


def test_no_caption_column_is_reported_not_computed():
    table, emb = _hand_inputs()
    res = compute_audit(parse_audit_spec(yaml_load(SPEC)), table.drop(columns="caption"), {"model": emb})
    row = value(res.results, "retrieval_recall", model="model")
    assert row["status"] == "not_computed" and "no captions" in row["note"] and "--caption-column" in row["note"]
    assert any(e["metric"] == "retrieval_recall" for e in res.summary["not_computed"])


def test_captions_without_embeddings_are_reported_not_computed():
    table, emb = _hand_inputs()
    emb.text.pop("caption 3")
    res = compute_audit(parse_audit_spec(yaml_load(SPEC)), table, {"model": emb})
    row = value(res.results, "retrieval_recall", model="model")
    assert row["status"] == "not_computed" and "1 of 12 captions have no text embedding" in row["note"]


def test_rows_without_a_caption_are_left_out():
    table, emb = _hand_inputs()
    table.loc[0, "caption"] = ""  # an A row: 11 pairs remain, 5 of them in A
    res = compute_audit(parse_audit_spec(yaml_load(SPEC)), table, {"model": emb}).results
    row = value(res, "retrieval_recall", model="model", label=I2T, attribute="group", group="A", k=1)
    assert row["n"] == 5 and row["value"] == 1.0 and "1 row(s) without a caption" in row["note"]
    assert value(res, "retrieval_mean_rank", model="model", label=I2T, group=schema.OVERALL)["n"] == 11


def yaml_load(text: str):
    import yaml

    return yaml.safe_load(text)


# ---------------------------------------------------------------------------------------
# through the runner: captions read from the data, embedded with the model, rows with n


@pytest.fixture(scope="module")
def derm_folder(tmp_path_factory, small_derm, tiny_tokenizer):
    from workbench.models import make_tiny_clip, save_clip

    root = tmp_path_factory.mktemp("retrieval")
    small_derm.save_to_disk(str(root / "data"))
    renamed = small_derm.rename_column("caption", "report_text")
    renamed.save_to_disk(str(root / "renamed"))
    save_clip(*make_tiny_clip(tiny_tokenizer, image_size=32, seed=0), root / "model")
    (root / "audit.yaml").write_text(
        "name: tiny_retrieval\n"
        "attributes:\n  - {column: skin_tone, groups: [light, medium, dark], reference: light}\n"
        "min_group_size: 5\nbootstrap: {n_boot: 50, seed: 0}\n")
    return root


def test_runner_reads_captions_and_matches_direct_encoding(derm_folder, small_derm):
    from workbench.audit import run_audit
    from workbench.data import pixels_for
    from workbench.embed import encode_images, encode_texts
    from workbench.models import load_clip

    res = run_audit(derm_folder / "audit.yaml", str(derm_folder / "model"), str(derm_folder / "data"), cache_dir=None,
                    progress=False)
    r = res.results
    captions = small_derm["test"]["caption"][:]
    texts = list(dict.fromkeys(captions))
    model, processor = load_clip(str(derm_folder / "model"))
    image = encode_images(model, pixels_for(small_derm["test"], processor.image_processor).pixels,
                          processor.image_processor).numpy()
    text = encode_texts(model, processor.tokenizer, texts).numpy()
    ranks = retrieval_ranks(image, text, np.array([texts.index(c) for c in captions]))
    tones = np.array(small_derm["test"]["skin_tone"][:])
    for direction in (I2T, T2I):
        k = 5
        overall = value(r, "retrieval_recall", model="model", label=direction, group=schema.OVERALL, k=k)
        assert overall["n"] == 32 and overall["value"] == pytest.approx((ranks[direction] <= k).mean())
        for tone in ("light", "medium", "dark"):
            row = value(r, "retrieval_mean_rank", model="model", label=direction, attribute="skin_tone", group=tone)
            assert row["n"] == int((tones == tone).sum())
            assert row["value"] == pytest.approx(ranks[direction][tones == tone].mean())
    # Every distinct caption was embedded (the values above match direct encoding); the summary
    # counts them instead of listing one text per image.
    assert res.summary["data"]["texts_not_listed"] == len(texts)
    assert not set(texts) & set(res.summary["prompts"])


def test_runner_caption_column_flag_and_fingerprint(derm_folder):
    from workbench.audit.runner import load_audit_data
    from workbench.audit.spec import load_audit_spec

    spec = load_audit_spec(derm_folder / "audit.yaml")
    plain = load_audit_data(str(derm_folder / "data"), spec)
    without = load_audit_data(str(derm_folder / "data"), spec, caption_column=None)
    # Captions live in the table only: the audited dataset (and the image-embedding cache key) is unchanged.
    assert plain.info["fingerprint"] == without.info["fingerprint"]
    assert "caption" in plain.table.columns and "caption" not in without.table.columns
    renamed = load_audit_data(str(derm_folder / "renamed"), spec, caption_column="report_text")
    assert renamed.table["caption"].tolist() == plain.table["caption"].tolist()
    missing = load_audit_data(str(derm_folder / "renamed"), spec)
    assert "caption" not in missing.table.columns
