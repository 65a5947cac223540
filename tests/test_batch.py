import numpy as np
from PIL import Image

from engine.edit.batch import collect_inputs, plan_outputs, run_batch
from engine.edit.session import Recipe
from engine.jobs import CancelToken


def make_tree(root, photo):
    (root / "trip" / "day2").mkdir(parents=True)
    arr = (photo * 255).astype(np.uint8)
    Image.fromarray(arr).save(root / "trip" / "a.jpg")
    Image.fromarray(arr).save(root / "trip" / "day2" / "b.png")
    (root / "trip" / "day2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(arr).save(root / "single.png")
    return [root / "trip", root / "single.png"]


def test_batch_mirrors_tree_collects_errors_and_resumes(tmp_path, photo, fake_restorer):
    inputs = collect_inputs(make_tree(tmp_path / "in", photo))
    items = plan_outputs(inputs, tmp_path / "out")
    recipe = Recipe([("remove the noise", 1.0)])
    report = run_batch(items, recipe, fake_restorer)
    outs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert outs == ["single.png", "trip/a.jpg", "trip/day2/b.png"]
    assert report.count("done") == 3 and report.count("failed") == 1
    assert "broken.jpg" in str(report.failed[0].source) and report.failed[0].error
    restored = np.asarray(Image.open(tmp_path / "out" / "trip" / "day2" / "b.png"), dtype=np.float32) / 255
    assert np.abs(restored - (photo * 0.5 + 0.25)).max() < 2 / 255
    again = run_batch(plan_outputs(inputs, tmp_path / "out"), recipe, fake_restorer)
    assert again.count("skipped") == 3 and again.count("done") == 0


def test_batch_format_conversion(tmp_path, photo, fake_restorer):
    inputs = collect_inputs(make_tree(tmp_path / "in", photo)[1:])
    items = plan_outputs(inputs, tmp_path / "out", "jpeg")
    run_batch(items, Recipe([("remove the noise", 1.0)]), fake_restorer, fmt="jpeg")
    assert (tmp_path / "out" / "single.jpg").is_file()


def test_cancel_keeps_finished_files_and_leaves_no_partial_ones(tmp_path, photo):
    from conftest import FakeRestorer

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray((photo * 255).astype(np.uint8)).save(src / f"{i}.png")
    token = CancelToken()
    items = plan_outputs(collect_inputs([src]), tmp_path / "out")

    def on_event(item, index, total, fraction):
        if index == 1 and 0 < fraction < 1:
            token.cancel()

    report = run_batch(items, Recipe([("remove the noise", 1.0)]), FakeRestorer(), on_event=on_event, cancel=token)
    assert report.cancelled
    files = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["0.png"]  # the finished one, no temp or partial file
    assert [i.status for i in items] == ["done", "cancelled", "pending"]
