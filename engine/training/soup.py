"""Average the weights of two exports of one network (a "model soup", Wortsman et al. 2022).

    python -m engine.training.soup resources/models/studio-small runs/export/stage-5 runs/export/soup --weight 0.5

A stage fine-tuned on new degradations gains on them and forgets a little of
the old ones; the average of the release it started from and that stage sits
between the two on both (measured with ``bench/quality.py --compare``). The
result is a model folder like any export, its card the newer one's with the
averaging recorded (``training.soup``); the intent head is averaged too, so
re-fit it afterwards (``python -m engine.training.intent <folder> --write``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.model.registry import load_folder, save_folder
from engine.training.export import render_card


def soup(older: Path, newer: Path, out: Path, weight: float) -> Path:
    """``(1 - weight) * older + weight * newer``, tensor by tensor, saved as a model folder at ``out``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], got {weight}")
    a, b = load_folder(older), load_folder(newer)
    if a.config != b.config or a.classes != b.classes:
        raise ValueError(f"{older} and {newer} are not the same network (config or classes differ)")

    def mix(sa: dict, sb: dict) -> dict:
        if sa.keys() != sb.keys():
            raise ValueError("the two models' tensors differ")
        return {k: (sa[k].float() * (1 - weight) + sb[k].float() * weight).to(sb[k].dtype) for k in sb}

    b.image_state, b.head_state = mix(a.image_state, b.image_state), mix(a.head_state, b.head_state)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    b.card.setdefault("training", {})["soup"] = {"older": a.card.get("exported", str(older)),
                                                 "weight_of_newer": weight, "date": now}
    b.card["exported"] = now
    save_folder(b, out, half=b.card.get("weights_dtype") == "float16")  # weights and card, each written once
    render_card(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("older", type=Path, help="the release the newer stage started from (--init)")
    ap.add_argument("newer", type=Path, help="the newer stage's export")
    ap.add_argument("out", type=Path)
    ap.add_argument("--weight", type=float, default=0.5, help="share of the newer model (default 0.5)")
    args = ap.parse_args(argv)
    out = soup(args.older, args.newer, args.out, args.weight)
    print(f"{args.older} x {1 - args.weight:g} + {args.newer} x {args.weight:g} -> {out}")


if __name__ == "__main__":
    main()
