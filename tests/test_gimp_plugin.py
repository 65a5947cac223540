"""``instructir gimp-install`` and the plug-in file itself (the real-GIMP run is tests/test_gimp_real.py)."""

from __future__ import annotations

import ast
import json
import stat
import sys
from pathlib import Path

import pytest

from engine.cli import main
from plugin_gimp import install as gimp_install

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugin_gimp" / "instructir.py"


def test_install_puts_an_executable_plugin_in_a_folder_of_its_name(tmp_path, capsys):
    plugins = tmp_path / "GIMP" / "3.0" / "plug-ins"
    assert main(["gimp-install", "--plugin-dir", str(plugins), "--model", "studio-small"]) == 0
    folder = plugins / "instructir"
    script = folder / "instructir.py"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert script.read_text() == PLUGIN.read_text()
    assert (folder / "instructir_protocol.py").read_text() == (REPO / "engine" / "serve" / "protocol.py").read_text()
    record = json.loads((folder / "instructir.json").read_text())
    assert record["python"] == sys.executable and Path(record["python"]).exists()
    assert record["model"] == "studio-small" and record["engine_path"] == str(REPO)
    assert record["state_file"].endswith("server.json")
    assert record["idle_exit"] == gimp_install.IDLE_EXIT_SECONDS == 300  # the server stops 5 min after GIMP's last run
    assert "installed" in capsys.readouterr().out
    assert main(["gimp-install", "--plugin-dir", str(plugins), "--idle-exit", "45"]) == 0
    assert json.loads((folder / "instructir.json").read_text())["idle_exit"] == 45
    assert "stops 45 s after the last filter run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["gimp-install", "--plugin-dir", str(plugins), "--idle-exit", "-1"])
    assert sorted(p.name for p in folder.iterdir()) == ["instructir.json", "instructir.py", "instructir_protocol.py"]

    assert main(["gimp-install", "--plugin-dir", str(plugins)]) == 0  # reinstall over it
    assert main(["gimp-install", "--uninstall", "--plugin-dir", str(plugins)]) == 0
    assert not folder.exists() and plugins.exists()
    assert main(["gimp-install", "--uninstall", "--plugin-dir", str(plugins)]) == 0
    assert "was not installed" in capsys.readouterr().out


def test_default_folder_follows_gimp3_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "g"))
    assert gimp_install.default_plugin_dir() == tmp_path / "g" / "plug-ins"
    monkeypatch.delenv("GIMP3_DIRECTORY")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
        assert gimp_install.default_plugin_dir() == tmp_path / "cfg" / "GIMP" / "3.0" / "plug-ins"


@pytest.mark.parametrize("path", [PLUGIN, REPO / "engine" / "serve" / "protocol.py"])
def test_plugin_side_needs_only_the_standard_library_and_gimp(path):
    """GIMP's Python has no torch and maybe no numpy: the plug-in and its protocol module import neither."""
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"gi", "instructir_protocol", "engine", "__future__"}
    assert roots <= allowed, roots - allowed
    if path == PLUGIN:
        src = path.read_text()
        assert src.startswith("#!/usr/bin/env python3")
        for needle in ('"plug-in-instructir"', 'set_menu_label("InstructIR...")', 'add_menu_path("<Image>/Filters")',
                       "undo_group_start", "undo_group_end"):
            assert needle in src


# --- the dialog's diagnosis ------------------------------------------------------------------

NOISY_REPLY = {"type": "diagnosis", "clean": False, "suggestion": "This photo looks noisy (strong) and a little dark.",
               "instruction": "Remove the noise and brighten it a little",
               "problems": [{"intent": "noise", "severity": 0.82, "reason": "grain of about 25/255 in flat areas"},
                            {"intent": "low-light", "severity": 0.41,
                             "reason": "under-exposed: average brightness 14%"},
                            {"intent": "blur", "severity": 0.2, "reason": "soft edges"}]}
CLEAN_REPLY = {"type": "diagnosis", "clean": True, "instruction": "", "problems": [],
               "suggestion": "This photo looks fine: nothing worth fixing."}


def test_the_dialog_label_says_what_is_wrong_why_and_what_to_type():
    from engine.serve.protocol import diagnosis_text

    text = diagnosis_text(NOISY_REPLY, "selection")
    assert text.splitlines() == [
        "This selection looks noisy (strong) and a little dark.",
        "\u2022 noise (82%): grain of about 25/255 in flat areas",
        "\u2022 low-light (41%): under-exposed: average brightness 14%",
        "Suggested: Remove the noise and brighten it a little"]  # the blur at 0.2 is not worth fixing: not listed
    assert diagnosis_text(CLEAN_REPLY) == "This layer looks fine: nothing worth fixing."


@pytest.mark.parametrize("current,last,expected", [
    ("", None, "Remove the noise and brighten it a little"),           # an empty field takes the suggestion
    ("   ", None, "Remove the noise and brighten it a little"),
    ("remove the rain", None, None),                                    # the user's own words stay
    ("remove the rain", "Remove the JPEG artifacts", None),
    ("Remove the JPEG artifacts", "Remove the JPEG artifacts",          # last photo's untouched suggestion: replaced
     "Remove the noise and brighten it a little"),
    ("Remove the noise and brighten it a little", "Remove the noise and brighten it a little", None),  # already there
])
def test_the_instruction_is_prefilled_only_when_empty_or_an_untouched_suggestion(current, last, expected):
    from engine.serve.protocol import prefill

    assert prefill(current, NOISY_REPLY, last) == expected


def test_a_clean_layer_prefills_nothing():
    from engine.serve.protocol import prefill

    assert prefill("", CLEAN_REPLY) is None and prefill("Remove the noise", CLEAN_REPLY, "Remove the noise") is None


def test_the_dialog_worker_thread_never_calls_gimp():
    """GIMP's and GEGL's calls are for the plug-in's main thread: the diagnosis worker only talks to the engine
    and hands every read of the layer to the main loop."""
    tree = ast.parse(PLUGIN.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DialogDiagnosis")
    methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
    worker = [methods["_work"], methods["_connect"], methods["_later"]]
    proxied = next(f for f in ast.walk(methods["_on_main_loop"]) if isinstance(f, ast.FunctionDef)
                   and f.name == "proxied")
    turn = next(f for f in ast.walk(proxied) if isinstance(f, ast.FunctionDef) and f.name == "turn")
    for fn in worker + [proxied]:
        for node in ast.walk(fn):
            if node is turn or any(node is t for t in ast.walk(turn)):
                continue  # turn() runs on the main loop (GLib.idle_add)
            if isinstance(node, ast.Name):
                assert node.id not in ("Gimp", "Gegl", "GimpUi", "wire_format", "region_reader", "region"), \
                    (fn.name, node.id, node.lineno)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                assert node.value.attr not in ("label", "button", "config", "image"), (fn.name, node.lineno)
    assert "GLib.idle_add(turn)" in ast.unparse(proxied)
