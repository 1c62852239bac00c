"""Occlusion heat maps: the peak falls on the class cue of a model that learned it; deterministic; cached."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from live_fixtures import AUDIT_NAME, build_live_run

from workbench import schema
from workbench.data import normalize_pixels, pad_token_ids, tokenize_captions
from workbench.live import HeatmapCache, cell_bounds, heatmap_for_row, occlusion_maps, open_live_audit, render_heatmap
from workbench.live.heatmap import group_mean_maps, sample_group_rows
from workbench.models import make_tiny_clip

SIZE, PATCH = 32, 8  # a 4 x 4 patch grid
GRID = SIZE // PATCH
PROMPTS = ("a red mark", "a blue mark")
COLOURS = {0: (220, 30, 30), 1: (30, 30, 220)}


def cue_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """uint8 (n, 3, 32, 32) grey noise with one red or blue 8 x 8 square in a random patch cell.

    Returns (pixels, class index, cue cell as row * GRID + column). The square's colour is the
    only thing that tells the classes apart, so a model that separates them must read it there.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 170, size=(n, 3, SIZE, SIZE)).astype(np.uint8)
    labels = rng.integers(0, 2, size=n)
    cells = rng.integers(0, GRID * GRID, size=n)
    for i in range(n):
        r, c = divmod(int(cells[i]), GRID)
        pixels[i, :, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = np.array(COLOURS[int(labels[i])])[:, None, None]
    return torch.from_numpy(pixels), torch.from_numpy(labels), cells


def _text_embeddings(model, tokenizer) -> torch.Tensor:
    ids, _ = tokenize_captions(tokenizer, list(PROMPTS), 40)
    input_ids, mask = pad_token_ids(ids, tokenizer.pad_token_id)
    return F.normalize(model.get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output, dim=-1)


@contextmanager
def one_thread():
    """The matrices here are tiny: on a shared CPU more threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cue_model(tiny_tokenizer):
    """A tiny CLIP trained (about 3 s) to tell the two prompts apart by the square's colour."""
    with one_thread():
        return _train_cue_model(tiny_tokenizer)


def _train_cue_model(tiny_tokenizer):
    torch.manual_seed(0)
    model, processor = make_tiny_clip(tiny_tokenizer, image_size=SIZE, patch_size=PATCH, seed=0)
    pixels, labels, _ = cue_images(512, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(150):
        batch = torch.randint(0, len(pixels), (64,), generator=torch.Generator().manual_seed(step))
        image = F.normalize(model.get_image_features(
            pixel_values=normalize_pixels(pixels[batch], processor.image_processor)).pooler_output, dim=-1)
        logits = 20.0 * image @ _text_embeddings(model, processor.tokenizer).T
        loss = F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        text = _text_embeddings(model, processor.tokenizer)
    return model, processor, text


def test_cell_bounds_cover_the_image_without_gaps():
    assert cell_bounds(32, 4) == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert cell_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    with pytest.raises(ValueError, match="does not fit"):
        cell_bounds(4, 5)


def test_peak_falls_on_the_cue_square_of_a_model_that_learned_it(cue_model):
    model, processor, text = cue_model
    pixels, labels, cells = cue_images(24, seed=123)  # images the model never saw
    with torch.no_grad(), one_thread():
        image = F.normalize(model.get_image_features(
            pixel_values=normalize_pixels(pixels, processor.image_processor)).pooler_output, dim=-1)
    accuracy = float(((image @ text.T).argmax(dim=1) == labels).float().mean())
    assert accuracy >= 0.95  # the model did learn the cue
    hits = 0
    for label in (0, 1):
        chosen = labels == label
        with one_thread():
            maps = occlusion_maps(model, processor.image_processor, pixels[chosen], text[label].numpy())
        assert maps.shape == (int(chosen.sum()), GRID, GRID)  # one cell per ViT patch by default
        peaks = maps.reshape(len(maps), -1).argmax(axis=1)
        hits += int((peaks == cells[chosen.numpy()]).sum())
        # Masking the cue removes the evidence: its cell's drop is positive and the largest.
        assert (maps.reshape(len(maps), -1)[np.arange(len(maps)), cells[chosen.numpy()]] > 0).all()
    assert hits == len(labels)


def test_the_method_is_deterministic_and_masks_with_the_mean_colour(cue_model):
    model, processor, text = cue_model
    pixels, _, _ = cue_images(3, seed=7)
    first = occlusion_maps(model, processor.image_processor, pixels, text[0].numpy())
    second = occlusion_maps(model, processor.image_processor, pixels, text[0].numpy())
    np.testing.assert_array_equal(first, second)
    # A 2 x 2 grid by hand: the top-right quarter set to 0 after normalisation (the processor's mean colour).
    coarse = occlusion_maps(model, processor.image_processor, pixels[:1], text[0].numpy(), grid=2)
    assert coarse.shape == (1, 2, 2)
    with torch.no_grad():
        whole = F.normalize(model.get_image_features(
            pixel_values=normalize_pixels(pixels[:1], processor.image_processor)).pooler_output, dim=-1)
        masked = normalize_pixels(pixels[:1], processor.image_processor)
        masked[0, :, :16, 16:] = 0.0
        part = F.normalize(model.get_image_features(pixel_values=masked).pooler_output, dim=-1)
    assert coarse[0, 0, 1] == pytest.approx(float(whole[0] @ text[0]) - float(part[0] @ text[0]), abs=1e-6)


def test_render_states_the_method_and_marks_the_peak(cue_model):
    model, processor, text = cue_model
    pixels, _, cells = cue_images(1, seed=11)
    heat = occlusion_maps(model, processor.image_processor, pixels, text[0].numpy())[0]
    picture = render_heatmap(pixels[0].permute(1, 2, 0).numpy(), heat, title="test", scale=8)
    assert picture.size[0] == SIZE * 8 and picture.size[1] > SIZE * 8  # the method's text strip below
    array = np.asarray(picture)
    r, c = divmod(int(np.argmax(heat)), GRID)
    assert tuple(array[r * PATCH * 8, c * PATCH * 8 + 10]) == (255, 255, 0)  # yellow outline of the peak cell
    assert (array[SIZE * 8 :] < 128).any()  # text drawn in the strip


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("live-heat")
    run, _ = build_live_run(root, tiny_tokenizer, root / "cache")
    return open_live_audit(run / schema.RUN_AUDIT_DIR / AUDIT_NAME, cache_dir=root / "cache")


def test_heatmap_of_a_row_is_cached_on_disk_and_equals_the_direct_computation(live, tmp_path):
    cache = HeatmapCache(tmp_path / "heat")
    row = int(live.table["row"].iloc[7])
    first = heatmap_for_row(live, "tuned", row, "a benign lesion", cache=cache)
    files = list((tmp_path / "heat").glob("*.npy"))
    assert len(files) == 1 and live.models["tuned"].fingerprint in files[0].name
    m = live.models["tuned"]
    direct = occlusion_maps(m.model, m.processor.image_processor, live.pixels("tuned", [row]),
                            live.prompt_embedding("tuned", "a benign lesion"))[0]
    np.testing.assert_array_equal(first, direct)
    # A planted file under the same key is what the second call returns: it reads, it does not recompute.
    np.save(files[0], np.full_like(first, 7.0), allow_pickle=False)
    np.testing.assert_array_equal(heatmap_for_row(live, "tuned", row, "a benign lesion", cache=cache), 7.0)
    base = heatmap_for_row(live, "base", row, "a benign lesion", cache=cache)
    assert len(list((tmp_path / "heat").glob("*.npy"))) == 2 and not np.array_equal(base, first)


def test_group_means_average_the_same_sampled_rows_for_every_model(live, tmp_path):
    cache = HeatmapCache(tmp_path / "heat")
    sampled = sample_group_rows(live, "skin_tone", 3, seed=0)
    assert set(sampled) == {"light", "medium", "dark"} and all(len(r) == 3 for r in sampled.values())
    assert sample_group_rows(live, "skin_tone", 3, seed=0) == sampled
    means = {role: group_mean_maps(live, role, "a benign lesion", "skin_tone", per_group=3, cache=cache)
             for role in ("base", "tuned")}
    for group, rows in sampled.items():
        for role in ("base", "tuned"):
            mean, used = means[role][group]
            assert used == rows
            maps = np.stack([heatmap_for_row(live, role, r, "a benign lesion", cache=cache) for r in rows])
            np.testing.assert_allclose(mean, maps.mean(axis=0), rtol=0, atol=1e-7)
    skin = live.table.set_index("row")["skin_tone"]
    assert all(skin[r] == g for g, rows in sampled.items() for r in rows)
    inter = sample_group_rows(live, "skin_tone*sex", 2, seed=0)
    assert len(inter) == 6 and "dark*male" in inter
