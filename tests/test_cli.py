import json

import numpy as np
from PIL import Image

from engine.cli import main


def write(path, photo):
    Image.fromarray((photo * 255).astype(np.uint8)).save(path)
    return path


def test_restore_writes_output_and_never_the_source(tmp_path, tiny_model_dir, photo, capsys):
    src = write(tmp_path / "photo.png", photo)
    before = src.read_bytes()
    assert main(["restore", str(src), "please remove the noise", "--model", str(tiny_model_dir)]) == 0
    out = tmp_path / "photo_restored.png"
    assert out.is_file() and src.read_bytes() == before
    assert main(["restore", str(src), "remove the noise", "--model", str(tiny_model_dir)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["restore", str(src), "remove the noise", "-o", str(src), "--model", str(tiny_model_dir)]) == 1
    assert src.read_bytes() == before


def test_restore_errors_are_one_line(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    assert main(["restore", str(tmp_path / "bad.jpg"), "remove the noise", "--model", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "Traceback" not in err
    assert main(["restore", str(tmp_path / "missing.png"), "x", "--model", str(tiny_model_dir)]) == 1


def test_plan_json(tiny_model_dir, capsys):
    assert main(["plan", "remove the noise and then brighten it a bit", "--json", "--model", str(tiny_model_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    steps = data["steps"]
    assert [s["text"] for s in steps] == ["remove the noise", "brighten it a bit"]
    assert steps[1]["strength"] == 0.5
    assert set(steps[0]) >= {"text", "intent", "confidence", "strength", "actionable", "message"}
    assert "instruction" not in data  # one instruction: the single object, as before


def test_plan_several_instructions_print_json_lines(tiny_model_dir, capsys, monkeypatch):
    from engine.model.pipeline import Restorer

    loads = []
    real = Restorer.from_pretrained.__func__
    counting = classmethod(lambda cls, *a, **k: loads.append(a) or real(cls, *a, **k))
    monkeypatch.setattr(Restorer, "from_pretrained", counting)
    texts = ["remove the noise", "hello there", "brighten it a bit"]
    assert main(["plan", *texts, "--json", "--model", str(tiny_model_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(loads) == 1
    assert [r["instruction"] for r in records] == texts
    assert all(set(r) >= {"model", "steps", "instruction"} for r in records)
    assert records[2]["steps"][0]["strength"] == 0.5
    assert main(["plan", "remove the noise", "   ", "--json", "--model", str(tiny_model_dir)]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["instruction"] == "   " and "empty" in last["error"]


def test_batch_cli(tmp_path, tiny_model_dir, photo, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        write(d / f"{i}.png", photo)
    code = main(["batch", str(d), "--instruction", "remove the noise", "-o", str(tmp_path / "out"),
                 "--model", str(tiny_model_dir), "--strength", "1"])
    out = capsys.readouterr().out
    if code == 1:  # the random tiny head may call the instruction unrelated: then nothing to do
        return
    assert code == 0 and "2 restored" in out
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == ["0.png", "1.png"]


def test_models_list(capsys):
    assert main(["models", "list"]) == 0
    assert "instructir-7d" in capsys.readouterr().out
