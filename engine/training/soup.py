"""Average the weights of exports of one network (a "model soup", Wortsman et al. 2022).

    python -m engine.training.soup resources/models/studio-small runs/export/stage-5 runs/export/soup --weight 0.5
    python -m engine.training.soup resources/models/studio-small runs/export/6 runs/export/6b runs/export/soup

A stage fine-tuned on new degradations gains on them and forgets a little of
the old ones; the average of the release it started from and that stage sits
between the two on both (measured with ``bench/quality.py --compare``). The
result is a model folder like any export, its card the first stage's with the
averaging recorded in that stage (``soup``); the intent head is averaged too, so
re-fit it afterwards (``python -m engine.training.intent <folder> --write``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.model.registry import load_folder, save_folder
from engine.training.export import last_stage, render_card, training_stages


def soup(base: Path, stages: list[Path], out: Path, weight: float) -> Path:
    """``(1 - weight) * base + weight * mean(stages)``, tensor by tensor, saved as a model folder at ``out``.

    ``stages`` are one or more exports fine-tuned from ``base`` (parallel runs
    with other seeds or mixtures: their mean is itself a soup, and forgot less
    of the old rain than one run did, measured on the release of 2026-12-02 evening).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be within [0, 1], got {weight}")
    if not stages:
        raise ValueError("a soup needs at least one stage besides its base")
    a, runs = load_folder(base), [load_folder(p) for p in stages]
    b = runs[0]
    for path, run in zip(stages, runs):
        if a.config != run.config or a.classes != run.classes:
            raise ValueError(f"{base} and {path} are not the same network (config or classes differ)")
        if run.image_state.keys() != a.image_state.keys() or run.head_state.keys() != a.head_state.keys():
            raise ValueError(f"the tensors of {base} and {path} differ")

    def mix(base_state: dict, states: list[dict]) -> dict:
        share = weight / len(states)
        return {k: (base_state[k].float() * (1 - weight) + sum(s[k].float() for s in states) * share)
                .to(states[0][k].dtype) for k in states[0]}

    b.image_state = mix(a.image_state, [r.image_state for r in runs])
    b.head_state = mix(a.head_state, [r.head_state for r in runs])
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    record = b.card.setdefault("training", {})
    last_stage(record)["soup"] = {"base": a.card.get("exported", str(base)), "weight": weight, "date": now,
                                  "parallel": [_stage_of(r.card) for r in runs[1:]]}
    b.card["exported"] = now
    save_folder(b, out, half=b.card.get("weights_dtype") == "float16")  # weights and card, each written once
    render_card(out)
    return out


def _stage_of(card: dict) -> dict:
    """What a parallel run was: its config, steps and seed (the full record is the first run's)."""
    stage = (training_stages(card.get("training", {})) or [{}])[-1]  # a one-stage record is its stage
    return {"config_file": stage.get("config_file"), "steps": stage.get("steps"),
            "seed": stage.get("train_config", {}).get("seed")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path, help="the release the stages started from (--init)")
    ap.add_argument("stages", type=Path, nargs="+", help="one or more exports fine-tuned from it")
    ap.add_argument("out", type=Path)
    ap.add_argument("--weight", type=float, default=0.5, help="share of the stages' mean (default 0.5)")
    args = ap.parse_args(argv)
    out = soup(args.base, args.stages, args.out, args.weight)
    names = " + ".join(str(p) for p in args.stages)
    print(f"{args.base} x {1 - args.weight:g} + mean({names}) x {args.weight:g} -> {out}")


if __name__ == "__main__":
    main()
