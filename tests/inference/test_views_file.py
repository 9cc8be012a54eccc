"""The views file: a weights-only round trip."""

from __future__ import annotations

import pytest
import torch
from inference_fakes import identity_properties

from nndet.inference.views import CaseViews, list_views, load_views, save_views


def _views() -> CaseViews:
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(20, 3, generator=g) * 30
    return CaseViews(
        case_id="case_007",
        boxes=torch.cat([lo, lo + 5], dim=1),
        scores=torch.rand(20, generator=g),
        labels=torch.randint(0, 2, (20,), generator=g),
        view_ids=torch.randint(0, 4, (20,), generator=g),
        view_model=torch.tensor([0, 0, 1, 1]),
        view_mirror=torch.tensor([0, 1, 0, 1]),
        view_tile=torch.tensor([0, 0, 0, 0]),
        mirror_axes=[[], [0, 2]],
        tile_starts=torch.tensor([[0, -2, 0]]),
        tile_size=torch.tensor([40, 40, 40]),
        image_shape=torch.tensor([40, 36, 40]),
        net_dim=3,
        num_models=2,
        properties=identity_properties([40, 36, 40]),
    )


def test_views_file_round_trips_with_weights_only(tmp_path):
    views = _views()
    path = save_views(views, tmp_path / "val_views")
    assert path.name == "case_007.pt"
    assert list_views(tmp_path / "val_views") == ["case_007"]

    raw = torch.load(path, weights_only=True)  # raises on anything but plain data
    assert raw["format"] == "nndet_views"
    loaded = load_views(path)
    for name in ("boxes", "scores", "labels", "view_ids", "view_mirror", "tile_starts"):
        assert torch.equal(getattr(loaded, name), getattr(views, name)), name
    assert loaded.mirror_axes == [[], [0, 2]]
    assert loaded.properties == views.properties
    assert (loaded.case_id, loaded.net_dim, loaded.num_models) == ("case_007", 3, 2)


def test_foreign_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"boxes": torch.zeros(0, 6)}, path)
    with pytest.raises(ValueError, match="not an nndet views file"):
        load_views(path)
