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
