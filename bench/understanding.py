"""How well instructions become plans, on the held-out set (tests/data/heldout_instructions.jsonl).

    python bench/understanding.py                          # bundled model, summary
    python bench/understanding.py --errors                 # also list every wrong plan
    python bench/understanding.py --json out.json          # the figures as JSON (docs/understanding.md)

A plan is *exactly right* when its actionable steps are the expected intents
(in the expected order when the text fixes the order, as a multiset otherwise),
with the expected strength where the set gives one (within 0.01). Reported:
exact-plan accuracy overall, per class (an instruction counts for every class
it expects; "unrelated" is the set of instructions that expect nothing) and per
pattern; the number of duplicate steps on instructions that name one problem
once; the share of unrelated text that becomes a no-op; and milliseconds per
instruction after the model is loaded (each instruction planned once, first
time seen: nothing is cached), next to the time of one bare call of the text
encoder per instruction in the same run (the machine's load shows in both),
and the planner's own work (a second pass, every embedding cached).

The held-out set is only measured here: never tune the planner, the lexicon or
the corpus on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HELDOUT = ROOT / "tests" / "data" / "heldout_instructions.jsonl"


def load_heldout(path: Path = HELDOUT) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def corpus_val_cases() -> list[dict]:
    """The instruction corpus' val split as plan cases: each sentence is one problem (or none, if unrelated)."""
    from engine.model.instructions import load_corpus

    val = load_corpus()["val"]
    return [{"text": t, "steps": [] if cls == "unrelated" else [cls], "ordered": False, "pattern": "corpus-val"}
            for cls, texts in val.items() for t in texts]


def judge(case: dict, steps) -> tuple[bool, list[str]]:
    """(exactly right?, the plan's actionable intents)."""
    got = [s for s in steps if s.actionable]
    intents = [s.intent for s in got]
    want = list(case["steps"])
    right = intents == want if case.get("ordered") else sorted(intents) == sorted(want)
    if right and case.get("strengths"):
        by_order = got if case.get("ordered") else sorted(got, key=lambda s: s.intent)
        wanted = list(zip(want, case["strengths"]))
        if not case.get("ordered"):
            wanted.sort(key=lambda p: p[0])
        right = all(w is None or abs(s.strength - w) < 0.01 for s, (_, w) in zip(by_order, wanted))
    return right, intents


def measure(cases: list[dict], model, plan) -> dict:
    per_class: dict[str, list[bool]] = defaultdict(list)
    per_pattern: dict[str, list[bool]] = defaultdict(list)
    errors, duplicates, single, unrelated_noop, seconds = [], 0, 0, [], 0.0
    for case in cases:
        t0 = time.perf_counter()
        steps = plan(case["text"], model)
        seconds += time.perf_counter() - t0
        right, intents = judge(case, steps)
        for cls in set(case["steps"]) or {"unrelated"}:
            per_class[cls].append(right)
        per_pattern[case["pattern"]].append(right)
        if not right:
            errors.append({"text": case["text"], "want": case["steps"], "ordered": case.get("ordered", False),
                           "got": intents, "strengths": [round(s.strength, 2) for s in steps if s.actionable]})
        if len(case["steps"]) == 1:
            single += 1
            duplicates += sum(n - 1 for n in Counter(intents).values() if n > 1)
        if not case["steps"]:
            unrelated_noop.append(not intents)
    rate = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "n": len(cases),
        "exact": rate([e for v in per_pattern.values() for e in v]),
        "per_class": {k: {"exact": rate(v), "n": len(v)} for k, v in sorted(per_class.items())},
        "per_pattern": {k: {"exact": rate(v), "n": len(v)} for k, v in sorted(per_pattern.items())},
        "duplicate_steps_on_single_problem": duplicates, "single_problem_instructions": single,
        "unrelated_noop_rate": rate(unrelated_noop), "unrelated_n": len(unrelated_noop),
        "ms_per_instruction": 1000 * seconds / max(len(cases), 1),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio-small")
    ap.add_argument("--set", type=Path, default=HELDOUT, help="JSON Lines of {text, steps, ordered, pattern}")
    ap.add_argument("--corpus-val", action="store_true",
                    help="measure on the corpus' val split instead (one problem or none per sentence): what to tune on")
    ap.add_argument("--errors", action="store_true", help="list every wrong plan")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    from engine.edit.planning import EmptyInstructionError, plan_instruction
    from engine.model.pipeline import Restorer

    model = Restorer.from_pretrained(args.model, device="cpu")
    no_op = model.bundle.no_op_classes

    def plan(text, m):
        try:
            return plan_instruction(text, m, no_op_classes=no_op)
        except EmptyInstructionError:  # "???": refused, so nothing is applied
            return []

    plan("warm up the encoder and the spelling corrector", model)
    cases = corpus_val_cases() if args.corpus_val else load_heldout(args.set)
    result = measure(cases, model, plan)

    name = "corpus val" if args.corpus_val else "held-out"
    print(f"{name}: {result['n']} instructions, exact plan {result['exact']:.1%}")
    print("per class:   " + ", ".join(f"{k} {v['exact']:.0%} ({v['n']})" for k, v in result["per_class"].items()))
    print("per pattern: " + ", ".join(f"{k} {v['exact']:.0%} ({v['n']})" for k, v in result["per_pattern"].items()))
    print(f"duplicate steps on {result['single_problem_instructions']} single-problem instructions: "
          f"{result['duplicate_steps_on_single_problem']}")
    print(f"unrelated -> no-op: {result['unrelated_noop_rate']:.1%} of {result['unrelated_n']}")
    t0 = time.perf_counter()  # again: every embedding is cached now, so this is the planner's own work
    for case in cases:
        plan(case["text"], model)
    result["ms_per_instruction_cached"] = 1000 * (time.perf_counter() - t0) / max(len(cases), 1)
    encoder = getattr(getattr(model, "encoder", None), "model", None)
    if encoder is not None:  # the same machine, the same moment: one bare sentence-encoder call per instruction
        t0 = time.perf_counter()
        for case in cases:
            encoder.encode([case["text"]], show_progress_bar=False)
        result["encoder_ms_per_instruction"] = 1000 * (time.perf_counter() - t0) / max(len(cases), 1)
    print(f"planning: {result['ms_per_instruction']:.1f} ms per instruction (model loaded, nothing cached)"
          + (f"; one bare text-encoder call per instruction takes {result['encoder_ms_per_instruction']:.1f} ms "
             "here now" if "encoder_ms_per_instruction" in result else "")
          + f"; the planner's own work (embeddings cached) {result['ms_per_instruction_cached']:.1f} ms")
    if args.errors:
        for e in result["errors"]:
            print(f"  {e['text']!r}: want {e['want']}{' (ordered)' if e['ordered'] else ''}, "
                  f"got {e['got']} {e['strengths']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
