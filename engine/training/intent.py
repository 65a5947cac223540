"""Re-fit the intent classifier (fc2) of a model folder on the instruction corpus.

    python -m engine.training.intent resources/models/studio-small            # report only
    python -m engine.training.intent runs/export/studio-small --write         # also save the new fc2

Only ``fc2`` (the 256 -> classes layer) is trained: ``fc1``'s output is the text
embedding that conditions the image network, so changing it would change the
restorations. The recipe is the training run's (AdamW, label smoothing 0.1,
Gaussian noise on the normalised sentence embeddings), full batch; the number
of epochs, learning rate and weight decay are chosen by k-fold cross-validation
on the train split alone. The validation split is only scored, before and after.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.model.instructions import labelled, load_corpus
from engine.model.registry import ModelBundle, load_folder, save_folder
from engine.training.export import last_stage, render_card
from engine.training.train import embed_corpus, intent_accuracy

#: (learning rate, weight decay) pairs tried by cross-validation; epochs are scored along the way.
GRID: tuple[tuple[float, float], ...] = ((3e-3, 1e-4), (3e-3, 1e-2), (1e-2, 1e-4), (1e-2, 1e-2))
EPOCH_CHECKPOINTS: tuple[int, ...] = (100, 200, 300, 400, 600)


@dataclass(frozen=True)
class Recipe:
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    text_noise: float = 0.04
    seed: int = 0


def fit_fc2(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
            checkpoints: tuple[int, ...] = (), on_checkpoint=None) -> torch.nn.Module:
    """Train ``head.fc2`` in place (full batch, fc1 frozen); ``on_checkpoint(epoch)`` after those epochs."""
    gen = torch.Generator().manual_seed(recipe.seed)
    for p in head.parameters():
        p.requires_grad_(False)
    params = list(head.fc2.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.9))
    head.train()
    for epoch in range(1, recipe.epochs + 1):
        noisy = F.normalize(x + recipe.text_noise * torch.randn(x.shape, generator=gen), dim=-1)
        loss = F.cross_entropy(head(noisy)[1], y, label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if epoch in checkpoints and on_checkpoint:
            head.eval()
            on_checkpoint(epoch)
            head.train()
    for p in params:
        p.requires_grad_(False)
    return head.eval()


def cross_validate(bundle: ModelBundle, x: torch.Tensor, y: torch.Tensor, folds: int = 5,
                   grid=GRID, checkpoints=EPOCH_CHECKPOINTS, seed: int = 0) -> tuple[Recipe, dict]:
    """Pick (epochs, lr, weight decay) by k-fold accuracy on the train split; returns it and all scores."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    fold_of = torch.empty_like(order)
    fold_of[order] = torch.arange(len(y)) % folds
    scores: dict[tuple[float, float, int], float] = {}
    for lr, wd in grid:
        correct = dict.fromkeys(checkpoints, 0)
        for k in range(folds):
            fit, held = fold_of != k, fold_of == k
            head = bundle.build_head()

            def score(epoch, head=head, held=held, correct=correct):
                with torch.no_grad():
                    correct[epoch] += int((head(x[held])[1].argmax(-1) == y[held]).sum())

            fit_fc2(head, x[fit], y[fit], Recipe(epochs=max(checkpoints), lr=lr, weight_decay=wd, seed=seed + k),
                    checkpoints, score)
        for epoch in checkpoints:
            scores[(lr, wd, epoch)] = correct[epoch] / len(y)
    # Best score; among near-ties (within half a sentence per fold) the fewest epochs, the smaller lr.
    best = max(scores.values())
    lr, wd, epochs = min((k for k, v in scores.items() if v >= best - folds / (2 * len(y))),
                         key=lambda k: (k[2], k[0], -k[1]))
    return Recipe(epochs=epochs, lr=lr, weight_decay=wd, seed=seed), scores


def evaluate(head: torch.nn.Module, vectors: dict, pairs: list[tuple[str, int]], classes: tuple[str, ...]) -> dict:
    """Accuracy, unrelated recall and the misclassified instructions of one split."""
    with torch.no_grad():
        pred = head(torch.stack([vectors[t] for t, _ in pairs]))[1].argmax(-1).tolist()
    errors = [(text, classes[c], classes[p]) for (text, c), p in zip(pairs, pred) if p != c]
    unrelated = [p == c for (_, c), p in zip(pairs, pred) if classes[c] == "unrelated"]
    return {"accuracy": intent_accuracy(head, vectors, pairs), "n": len(pairs),
            "unrelated_recall": sum(unrelated) / len(unrelated) if unrelated else None, "errors": errors}


def _stored_half(folder: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return any(fh.get_slice(k).get_dtype() == "F16" for k in fh.keys())


def _print_report(name: str, result: dict) -> None:
    recall = result["unrelated_recall"]
    print(f"{name}: val accuracy {result['accuracy']:.1%} of {result['n']}"
          + (f", unrelated recall {recall:.1%}" if recall is not None else ""))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="model folder (model.safetensors + model_card.json)")
    ap.add_argument("--write", action="store_true", help="save the re-fitted fc2 back into the folder")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds on the train split")
    ap.add_argument("--epochs", type=int, help="skip cross-validation: fit this many epochs")
    ap.add_argument("--cache", type=Path, help="sentence-embedding cache file (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    bundle = load_folder(args.folder)
    classes = bundle.classes
    train, val = labelled("train", classes), labelled("val", classes)
    with tempfile.TemporaryDirectory() as tmp:
        vectors = embed_corpus(bundle.encoder, args.cache or Path(tmp) / "embeddings.pt")
    x, y = torch.stack([vectors[t] for t, _ in train]), torch.tensor([c for _, c in train])

    head = bundle.build_head()
    before = evaluate(head, vectors, val, classes)
    _print_report("before", before)
    t0 = time.time()
    if args.epochs:
        recipe, scores = Recipe(epochs=args.epochs), {}
    else:
        recipe, scores = cross_validate(bundle, x, y, folds=args.folds)
        print(f"{args.folds}-fold cross-validation on train ({len(y)} instructions): best "
              f"{max(scores.values()):.1%}; chose {recipe.epochs} epochs, lr {recipe.lr:g}, weight decay "
              f"{recipe.weight_decay:g} ({scores[(recipe.lr, recipe.weight_decay, recipe.epochs)]:.1%})")
    fit_fc2(head, x, y, recipe)
    half = _stored_half(args.folder)
    state = {k: (v.half().float() if half else v.clone()) for k, v in head.state_dict().items()}
    head.load_state_dict(state)  # score the weights exactly as they would be stored
    after = evaluate(head, vectors, val, classes)
    _print_report("after ", after)
    print(f"train accuracy after: {intent_accuracy(head, vectors, train):.1%}; fit took {time.time() - t0:.0f} s")
    pairs = Counter(f"{true}->{pred}" for _, true, pred in after["errors"])
    print("confusions (true->predicted): " + (", ".join(f"{k} x{n}" for k, n in pairs.most_common()) or "none"))
    print("remaining validation errors (instruction: true -> predicted):")
    for text, true, pred in after["errors"]:
        print(f"  {text!r}: {true} -> {pred}")

    if args.write:
        from safetensors import safe_open

        with safe_open(str(args.folder / "model.safetensors"), "pt") as fh:
            bundle.encoder = (fh.metadata() or {}).get("text_encoder", bundle.encoder)  # keep the stored name
        bundle.head_state = {**bundle.head_state, "fc2.weight": state["fc2.weight"], "fc2.bias": state["fc2.bias"]}
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        bundle.card = {**bundle.card, "intent_refit": {
            "corpus_version": load_corpus()["version"], "train_instructions": len(train),
            "recipe": recipe.__dict__, "val_accuracy_before": before["accuracy"],
            "val_accuracy_after": after["accuracy"], "val_unrelated_recall_after": after["unrelated_recall"],
            "date": now}}
        if training := bundle.card.get("training"):
            last_stage(training)["intent_refit"] = now  # so the card's commands include this step
        save_folder(bundle, args.folder, half=half)
        render_card(args.folder)
        print(f"wrote the re-fitted fc2 to {args.folder} ({'fp16' if half else 'fp32'})")
    return {"before": before, "after": after, "recipe": recipe, "cv_scores": scores}


if __name__ == "__main__":
    main()
