"""More clean training photos: the nature photographs shipped in Debian packages.

    python -m engine.training.photos fetch              # into the user cache folder
    python -m engine.training.photos fetch --dest DIR   # somewhere else
    python -m engine.training.photos fetch --debs DIR   # from .deb files already downloaded (offline)
    python -m engine.training.photos list               # what is in the cache, with licences

Each package is downloaded with ``apt-get download`` (no root needed, nothing
is installed), unpacked with ``dpkg-deb -x``, and the photographs we picked
from it (``PACKAGES``: photos only, no drawings, logos or renders; no hazy or
foggy scenes, which would teach the haze task to keep haze) are copied into
``<cache>/<package>/`` as PNG, at most ``MAX_SIDE`` px on the long side. The
package's ``copyright`` file is kept next to them, and each photo's licence (the
last matching ``Files:`` stanza of that machine-readable copyright file) is
recorded in ``<cache>/sources.json``. Training reads the cache when its config
says ``"photo_cache": true`` (``engine.training.data.load_photos``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

MAX_SIDE = 2048

_PLASMA = ("BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "Kite",
           "OneStandsOut", "Path", "summer_1am")
_LXQT = ("Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png", "beam.png",
         "butterfly.png", "cloud.png", "drop.png", "flowers.png", "this-is-not-windows.jpg")

#: Package -> glob patterns (inside the package) of the photographs we take. For a wallpaper folder with
#: several sizes of one picture only the largest is taken.
PACKAGES: dict[str, tuple[str, ...]] = {
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature/*.jpg",),
    "plasma-workspace-wallpapers": tuple(f"usr/share/wallpapers/{n}/contents/images/*" for n in _PLASMA),
    "lxqt-themes": tuple(f"usr/share/lxqt/wallpapers/{n}" for n in _LXQT),
}


def cache_dir() -> Path:
    """The folder fetched photos go to (platformdirs' user cache for InstructIR Studio)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("instructir-studio")) / "training-photos"


def parse_copyright(text: str) -> list[tuple[list[str], str, str]]:
    """The ``Files:`` stanzas of a machine-readable (DEP-5) copyright file: (patterns, licence, copyright)."""
    stanzas = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and "license" in fields:
            stanzas.append((fields["files"].split(), fields["license"].splitlines()[0].strip(),
                            " ".join(fields.get("copyright", "").split())))
    return stanzas


def licence_of(installed: str, stanzas: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """Licence and copyright of a file installed at ``installed``: the last stanza whose pattern matches
    a tail of its path (copyright files name source-tree paths, not installed ones)."""
    parts = installed.strip("/").split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    found = ("unknown", "")
    for patterns, lic, holder in stanzas:
        if any(fnmatch.fnmatchcase(t, p) for p in patterns for t in tails):
            found = (lic, holder)
    return found


def _pick(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    picked = []
    for pattern in patterns:
        hits = sorted(p for p in root.glob(pattern) if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
        if "contents/images/" in pattern and hits:
            hits = [max(hits, key=lambda p: p.stat().st_size)]
        picked += hits
    return picked


def _download(package: str, into: Path) -> Path:
    subprocess.run(["apt-get", "download", package], cwd=into, check=True, capture_output=True, text=True)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} left no .deb in {into}")
    return debs[-1]


def fetch(dest: Path, debs: Path | None = None, packages: list[str] | None = None) -> list[dict]:
    """Bring the photos of ``packages`` (default: all of ``PACKAGES``) into ``dest``; returns the records."""
    dest.mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for package in packages or list(PACKAGES):
            local = sorted(debs.glob(f"{package}_*.deb")) if debs else []
            deb = local[-1] if local else _download(package, tmp)
            root = tmp / f"x-{package}"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            copyright_file = root / "usr/share/doc" / package / "copyright"
            text = copyright_file.read_text(encoding="utf-8", errors="replace") if copyright_file.exists() else ""
            stanzas = parse_copyright(text)
            out = dest / package
            out.mkdir(exist_ok=True)
            if text:
                (out / "copyright").write_text(text, encoding="utf-8")
            version = deb.name.split("_")[1].replace("%3a", ":")
            for src in _pick(root, PACKAGES[package]):
                rel = src.relative_to(root).as_posix()
                lic, holder = licence_of(rel, stanzas)
                name = (src.parts[-4] if "contents/images" in rel else src.stem) + ".png"
                with Image.open(src) as im:
                    im = im.convert("RGB")
                    size = im.size
                    if max(im.size) > MAX_SIDE:
                        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
                    im.save(out / name)
                records.append({"file": f"{package}/{name}", "package": package, "version": version,
                                "source": "/" + rel, "original_size": list(size), "license": lic,
                                "copyright": holder})
                print(f"{package}/{name}: {lic} ({holder})", flush=True)
            shutil.rmtree(root)
    (dest / "sources.json").write_text(json.dumps(records, indent=2) + "\n")
    return records


def summary(records: list[dict]) -> str:
    """One line per package: photos, version and licences (for the model card)."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["package"], []).append(r)
    lines = []
    for package, rs in by.items():
        lics = sorted({r["license"] for r in rs})
        lines.append(f"{package} {rs[0]['version']}: {len(rs)} photos, licence {', '.join(lics)}")
    return "; ".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the packages and copy their photos into the cache")
    f.add_argument("--dest", type=Path, help=f"target folder (default: {cache_dir()})")
    f.add_argument("--debs", type=Path, help="a folder of already downloaded .deb files to use first")
    f.add_argument("--package", action="append", choices=sorted(PACKAGES), help="only these packages")
    ls = sub.add_parser("list", help="what the cache holds")
    ls.add_argument("--dest", type=Path)
    args = ap.parse_args(argv)
    dest = args.dest or cache_dir()
    if args.cmd == "fetch":
        if not shutil.which("dpkg-deb") or (not args.debs and not shutil.which("apt-get")):
            print("needs apt-get and dpkg-deb (a Debian or Ubuntu system)", file=sys.stderr)
            return 2
        records = fetch(dest, args.debs, args.package)
        print(f"{len(records)} photos in {dest}: {summary(records)}")
    else:
        src = dest / "sources.json"
        if not src.exists():
            print(f"nothing fetched into {dest} yet")
            return 1
        records = json.loads(src.read_text())
        for r in records:
            print(f"{r['file']}: {r['license']} ({r['copyright']}) from {r['package']} {r['version']}")
        print(summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
