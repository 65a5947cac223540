"""Grow the instruction corpus: hand-written sentences plus template-generated variety.

    python -m engine.training.corpus            # rewrite engine/model/data/instructions.json (deterministic)
    python -m engine.training.corpus --check    # fail when the file is not what the generator makes

The corpus keeps every hand-written sentence of the previous version (``HAND``:
the v2 corpus' train and val splits, as they were) and adds, per class,
sentences built from templates: symptom descriptions ("the sky looks speckly"),
requests ("could you clear the mist"), a description and a request in one
sentence, questions, very short ones, long ones with context, polite filler,
degree words, and typos (letters swapped, dropped or doubled). The vocabulary
here is written for the templates, per class; it overlaps the planner's lexicon
(``engine/edit/data/lexicon.json``) on purpose, so the head learns the words the
prior will point at. Generated sentences are split 90/10 into train and val by
a hash of the text, so the split is stable when the templates grow; the val
split is what the head's re-fit (``engine.training.intent``) reports on.

Nothing here is taken from the planner's held-out set
(tests/data/heldout_instructions.jsonl): the tests check that none of its
sentences is in the corpus.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from pathlib import Path

from engine.model.instructions import CORPUS_PATH, STUDIO_CLASSES

VERSION = 3
SEED = 13
PER_CLASS = 520
UNRELATED = 700
VAL_SHARE = 0.1
#: Share of generated restoration sentences with one typo (each new misspelling costs the spelling corrector a
#: look-up when it starts; the hand-written sentences have their own).
TYPO_SHARE = 0.04

SUBJECTS = ("the photo", "this photo", "the picture", "this picture", "the image", "this image", "my photo",
            "the shot", "this shot", "the pic", "my picture", "the frame", "this one", "the scan", "my snapshot",
            "the portrait", "the landscape", "the wedding photo", "the holiday picture", "the photo of my dog",
            "the group shot", "the selfie", "the night shot", "the street photo", "the product shot")
PARTS = ("the sky", "the background", "the faces", "the shadows", "the whole thing", "the left side", "the corners",
         "the foreground", "his face", "her dress", "the buildings", "the trees", "the water", "everything")
POLITE_BEFORE = ("please ", "hi, ", "hello! ", "hey, ", "could you please ", "would you ", "can you ", "kindly ",
                 "if you can, ", "I'd like you to ", "I need you to ", "go ahead and ", "")
POLITE_AFTER = ("", "", "", " please", ", thanks", ", thank you", " thx", ", cheers", " for me", ", much appreciated",
                " if possible", "!", "?")
CONTEXT = ("I took this on holiday last summer and ", "this is from my cousin's wedding and ",
           "my old phone took this at a concert, ", "I scanned this from an old album and ",
           "we shot this at the beach at sunset, ", "this was taken at my daughter's school play and ",
           "a friend sent me this picture and ", "I found this in a box of family photos and ",
           "my grandfather took this decades ago and ", "this is the only shot I have of the event and ")
DEGREES = ("a little", "slightly", "a bit", "a touch", "gently", "a lot", "strongly", "completely",
           "as much as you can", "moderately", "just a tad", "heavily", "somewhat", "at 50%",
           "with strength 0.4", "a tiny bit")

#: Per class: (symptom adjectives, symptom noun phrases, request verb phrases, slang / idioms, short forms).
VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "noise": {
        "adj": ("noisy", "grainy", "speckled", "speckly", "full of grain", "full of noise", "gritty", "sandy",
                "blotchy", "mottled", "fizzy with noise", "dotted with colour specks", "covered in sensor noise",
                "peppered with noise", "crawling with grain", "full of high iso noise", "fuzzy with static"),
        "noun": ("noise", "grain", "digital noise", "colour noise", "chroma noise", "luminance noise", "speckles",
                 "sensor noise", "high iso noise", "colour blotches", "specks", "salt and pepper noise",
                 "the grain in the shadows", "noise in the dark areas", "noise from the high iso"),
        "verb": ("denoise", "remove the noise from", "clean up the grain in", "get rid of the grain in",
                 "smooth out the noise in", "reduce the noise in", "kill the noise in", "take the grain out of",
                 "clear the speckles from", "de-noise", "lose the grain in", "suppress the noise in"),
        "slang": ("it looks like sandpaper", "the shadows are full of confetti", "it's all fizzy",
                  "it's like tv static", "the high iso made a mess of it", "there's colour mush in the shadows",
                  "too much grit in the sky", "shot at iso 12800 and it shows", "the sensor noise is horrible",
                  "looks like a grainy film scan", "the night sky is crawling with specks"),
        "short": ("noise", "grain", "denoise", "too noisy", "grainy", "less grain", "no more noise", "noise pls",
                  "speckles", "de-noise", "reduce noise", "cleaner shadows please"),
    },
    "blur": {
        "adj": ("blurry", "blurred", "out of focus", "soft", "fuzzy", "smeared", "shaky", "unsharp", "not sharp",
                "smudged", "mushy", "ghosted", "doubled from camera shake", "soft and lacking detail",
                "motion blurred", "defocused", "a little soft", "not in focus"),
        "noun": ("blur", "motion blur", "camera shake", "the blurriness", "the softness", "the smear", "the fuzz",
                 "defocus blur", "the ghosting", "the doubled edges", "lens blur", "shake"),
        "verb": ("sharpen", "deblur", "unblur", "bring into focus", "make sharper", "crisp up", "refocus",
                 "remove the blur from", "fix the focus of", "tighten up the detail in", "steady", "de-blur",
                 "remove the camera shake from", "sharpen up"),
        "slang": ("I missed focus", "the autofocus hunted and missed", "my hands were shaking", "he moved",
                  "it needs more bite", "the details are mush", "the edges look doubled", "it's not tack sharp",
                  "the lens was soft wide open", "the subject is smeared from motion", "focus is way off"),
        "short": ("blur", "blurry", "sharpen", "sharper", "deblur", "focus", "unblur", "crisper", "too soft",
                  "more detail", "less blur", "sharpen pls"),
    },
    "rain": {
        "adj": ("rainy", "full of rain streaks", "streaked with rain", "covered in raindrops", "wet with rain",
                "spotted with drops", "crossed by rain lines", "drizzly", "streaky from the rain"),
        "noun": ("rain", "the rain", "rain streaks", "raindrops", "the drizzle", "the downpour", "water streaks",
                 "the rainfall", "rain lines", "the drops on the lens", "the rain in front of the lens", "the shower"),
        "verb": ("derain", "remove the rain from", "take the rain out of", "clear the rain streaks from",
                 "get rid of the raindrops in", "wipe the rain off", "erase the rain streaks in", "de-rain",
                 "clean the raindrops off", "remove the drizzle from"),
        "slang": ("it was pouring", "it was bucketing down", "we got caught in a downpour",
                  "the storm hit while I shot", "white lines of rain everywhere",
                  "rain is slicing across the frame", "the drizzle ruins it",
                  "it was a rainy day and you can see it"),
        "short": ("rain", "derain", "no rain", "rain streaks", "raindrops", "remove rain", "de-rain", "rainy",
                  "drizzle", "less rain"),
    },
    "haze": {
        "adj": ("hazy", "foggy", "misty", "smoggy", "murky", "milky", "veiled in haze", "washed out by fog",
                "covered in smog", "lost in mist", "clouded by haze", "greyed out by haze", "smoky"),
        "noun": ("haze", "fog", "mist", "smog", "the haze", "atmospheric haze", "the grey veil", "the murk",
                 "the fog layer", "the milky haze", "the smoke in the air", "the wildfire haze",
                 "the mist over the lake"),
        "verb": ("dehaze", "defog", "remove the haze from", "clear the fog from", "cut through the haze in",
                 "lift the mist from", "get rid of the smog in", "de-haze", "clear the air in", "take the fog out of",
                 "remove the mist from", "clear up"),
        "slang": ("the distance is all murk", "the mountains vanish into the soup", "it looks like pea soup",
                  "the horizon is a grey smear of smog", "the city is behind a veil", "wildfire smoke everywhere",
                  "the far hills are washed out", "there's a milky layer over everything"),
        "short": ("haze", "fog", "dehaze", "defog", "hazy", "foggy", "mist", "less haze", "no fog", "clear the fog",
                  "smog"),
    },
    "low-light": {
        "adj": ("dark", "too dark", "underexposed", "dim", "gloomy", "underlit", "nearly black", "murky and dark",
                "badly lit", "poorly lit", "shadowy", "two stops under", "a stop underexposed", "way too dim",
                "almost pitch black", "lost in shadow"),
        "noun": ("darkness", "the underexposure", "the dark shadows", "the lack of light", "the gloom",
                 "low light", "the dim lighting"),
        "verb": ("brighten", "lighten", "brighten up", "light up", "lift the exposure of", "raise the exposure of",
                 "make brighter", "make lighter", "open up the shadows in", "push the exposure of", "illuminate",
                 "add light to", "bring up the brightness of", "boost the exposure of"),
        "slang": ("I can't see anyone's faces", "it's like a black hole", "you can barely make anything out",
                  "it was shot by candlelight", "the shadows are crushed", "it needs a couple more stops",
                  "shot at night without a flash", "the room was lit by one lamp", "it's practically black"),
        "short": ("too dark", "brighter", "lighter", "brighten", "lighten", "more light", "dark", "underexposed",
                  "brighten pls", "more exposure", "lift it", "brighter please"),
    },
    "enhancement": {
        "adj": ("dull", "flat", "washed out", "lifeless", "faded", "drab", "muddy", "bland", "dreary", "grey and flat",
                "low in contrast", "too yellow", "too blue", "greenish", "off in colour", "boring to look at",
                "tired looking", "undersaturated"),
        "noun": ("the colours", "the contrast", "the white balance", "the colour cast", "the saturation", "the tones",
                 "the vibrance", "the yellow tint", "the blue cast", "the dull colours", "the flat look"),
        "verb": ("enhance", "improve", "boost the colours of", "add contrast to", "make more vibrant", "make pop",
                 "fix the colours of", "correct the white balance of", "saturate", "add punch to", "liven up",
                 "give some life to", "warm up", "colour correct", "make more vivid", "punch up"),
        "slang": ("it needs some pop", "the colours are tired", "it looks like an old faded print",
                  "give it that punchy look", "the tones are muddy", "it looks so flat", "the colours feel lifeless",
                  "it's got an ugly orange cast", "make it look more professional", "it looks washed out"),
        "short": ("more pop", "enhance", "more contrast", "more colour", "vibrant", "punchier", "richer colours",
                  "better colours", "improve it", "more vivid", "saturate"),
    },
    "upsampling": {
        "adj": ("tiny", "too small", "low resolution", "low-res", "pixelated", "pixelly", "too small to print",
                "a tiny thumbnail", "not enough pixels", "blocky from being small"),
        "noun": ("the resolution", "the size", "the pixel count", "a higher resolution", "more pixels",
                 "a bigger version", "print size"),
        "verb": ("upscale", "enlarge", "upsample", "upsize", "make bigger", "make larger", "super-resolve",
                 "blow up", "double the size of", "increase the resolution of", "scale up", "up-res",
                 "upscale 2x", "upscale 4x", "enlarge by 3x", "make twice as big", "resize up"),
        "slang": ("I want to print it big", "it's only a thumbnail", "I need it at poster size", "it needs more pixels",
                  "I want it as a 4k wallpaper", "it's too low res for my screen", "it's only 400 pixels wide",
                  "I need it sharp at billboard size"),
        "short": ("upscale", "bigger", "4x", "2x", "enlarge", "upscale pls", "super resolution", "larger",
                  "higher res", "more pixels", "x2", "up-res"),
    },
    "jpeg": {
        "adj": ("blocky", "over-compressed", "full of jpeg artifacts", "covered in compression blocks", "crunchy",
                "ruined by compression", "full of macroblocks", "mangled by compression", "chunky from compression",
                "riddled with artefacts", "banded from compression"),
        "noun": ("jpeg artifacts", "compression artifacts", "the blockiness", "the blocks", "the macroblocks",
                 "the ringing", "the mosquito noise", "the halos around edges", "the banding", "the jpeg blocks",
                 "compression artefacts", "the crunch from compression"),
        "verb": ("dejpeg", "deblock", "remove the jpeg artifacts from", "clean the compression out of",
                 "fix the compression in", "smooth the blocks in", "undo the compression in", "de-jpeg",
                 "get rid of the artefacts in", "repair the jpeg damage in"),
        "slang": ("whatsapp crushed it", "it's been saved as jpeg too many times", "it looks like a meme copied 100 "
                  "times", "the sky is made of squares", "the compression ate the detail", "it's a tenth-generation "
                  "copy", "there's mosquito noise around the text", "the bitrate was too low"),
        "short": ("jpeg", "dejpeg", "deblock", "blocky", "artifacts", "compression", "less blocky", "jpeg fix",
                  "no artefacts", "fix compression"),
    },
}

#: Unrelated: edits the models do not make, questions, chat, context with no request, gibberish.
UNRELATED_PARTS = {
    "edit": ("crop", "rotate", "flip", "mirror", "straighten", "resize to a square", "convert to black and white",
             "make sepia", "add a caption to", "add a border to", "put a frame around", "add my logo to",
             "remove the person from", "erase the car in", "swap the faces in", "add a hat to the dog in",
             "change the background of", "turn into a cartoon", "make into a painting", "add snow to",
             "add a sunset to", "put stickers on", "blur the faces in", "make the eyes blue in",
             "give everyone a moustache in", "cut out the background of", "add text to", "make a meme of",
             "animate", "rename", "export", "print", "share", "send", "tag my friends in", "delete"),
    "chat": ("hello", "hi there", "how are you", "thanks", "thank you so much", "good job", "nice work", "cool",
             "lol", "wow", "great", "ok thanks", "never mind", "forget it", "what can you do", "who made you",
             "tell me a story", "what's the weather like", "what time is it", "I love this picture",
             "this is my favourite photo", "it was a great day", "we had so much fun", "my dog is called max",
             "is this a good photo", "who is in this picture", "where was this taken", "how many people are there",
             "what camera took this", "how much memory do I have", "leave it", "no changes", "that's fine as it is",
             "stop", "undo that", "go back", "cancel", "start over", "looks good to me", "perfect"),
    "context": ("we were at the lake last weekend", "my brother took this one", "it was my birthday",
                "this was in paris", "that's my grandmother on the left", "we were hiking all day",
                "the party started at eight", "the dog was running around", "it was a sunny afternoon",
                "this is our new house", "the kids were playing in the garden", "it's a picture of my car"),
    "gibberish": ("asdf", "qwerty", "zzzz", "jjjjj", "lkjhg", "...", "???", "hmmm", "xyz", "aaaa", "12345"),
}


def _typo(text: str, rng: random.Random) -> str:
    words = text.split()
    idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not idx:
        return text
    i = rng.choice(idx)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    elif kind == 1:
        w = w[:j] + w[j + 1:]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def _class_sentences(cls: str, rng: random.Random, n: int) -> list[str]:
    v = VOCAB[cls]
    pick = rng.choice

    def desc() -> str:
        return pick((
            lambda: f"{pick(SUBJECTS)} is {pick(v['adj'])}",
            lambda: f"{pick(SUBJECTS)} looks {pick(v['adj'])}",
            lambda: f"{pick(SUBJECTS)} came out {pick(v['adj'])}",
            lambda: f"{pick(PARTS)} {pick(('is', 'looks', 'seems'))} {pick(v['adj'])}",
            lambda: f"there is {pick(('a lot of', 'so much', 'some', 'too much', 'way too much'))} {pick(v['noun'])}"
                    f"{pick(('', ' in ' + pick(PARTS), ' everywhere', ' all over it'))}",
            lambda: f"it's {pick(v['adj'])}",
            lambda: pick(v["slang"]),
        ))()

    def request() -> str:
        verb = pick(v["verb"])
        obj = pick(("it", "this", "the photo", "the picture", "the image", "my photo", "this one", "the shot"))
        if verb.endswith((" of", " from", " in", " to", " off")):
            return f"{verb} {obj}"
        if cls == "enhancement" and verb in ("make more vibrant", "make more vivid", "make pop"):
            return f"make {obj} {verb.split(' ', 1)[1]}"
        if verb.startswith(("make ", "bring ")):
            return f"{verb.split(' ', 1)[0]} {obj} {verb.split(' ', 1)[1]}"
        return pick((f"{verb} {obj}", verb, f"{verb} {obj} {pick(DEGREES)}", f"{pick(DEGREES)} {verb} {obj}"))

    forms = (
        lambda: desc(),
        lambda: request(),
        lambda: f"{pick(POLITE_BEFORE)}{request()}{pick(POLITE_AFTER)}",
        lambda: f"{desc()}, {request()}",
        lambda: f"{desc()}. {pick(POLITE_BEFORE)}{request()}{pick(POLITE_AFTER)}",
        lambda: f"{desc()} so {pick(('please ', 'can you ', 'could you ', ''))}{request()}",
        lambda: f"{pick(('can you', 'could you', 'would you', 'is it possible to', 'any chance you could'))} "
                f"{request()}?",
        lambda: f"{pick(('why is', 'how come'))} {pick(SUBJECTS)} so {pick(v['adj'])}? {request()}",
        lambda: pick(v["short"]),
        lambda: f"{pick(CONTEXT)}{desc()}; {pick(POLITE_BEFORE)}{request()}{pick(POLITE_AFTER)}",
        lambda: f"{pick(('get rid of', 'remove', 'lose', 'fix', 'sort out', 'deal with'))} {pick(v['noun'])}",
        lambda: f"{pick(('I hate', 'I do not like', 'please fix', 'can you fix'))} {pick(v['noun'])}"
                f"{pick(('', ' in ' + pick(PARTS)))}",
    )
    out: set[str] = set()
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        s = re.sub(r"\s+", " ", pick(forms)()).strip()
        if rng.random() < TYPO_SHARE:
            s = _typo(s, rng)
        if rng.random() < 0.15:
            s = s[0].upper() + s[1:]
        out.add(s)
    return sorted(out)


def _unrelated_sentences(rng: random.Random, n: int) -> list[str]:
    pick = rng.choice
    p = UNRELATED_PARTS
    forms = (
        lambda: f"{pick(POLITE_BEFORE)}{pick(p['edit'])} {pick(SUBJECTS)}{pick(POLITE_AFTER)}",
        lambda: f"{pick(p['edit'])} it",
        lambda: f"{pick(('can you', 'could you', 'please'))} {pick(p['edit'])} {pick(SUBJECTS)}?",
        lambda: pick(p["chat"]),
        lambda: f"{pick(p['chat'])}{pick(POLITE_AFTER)}",
        lambda: pick(p["context"]),
        lambda: f"{pick(p['context'])}, {pick(p['chat'])}",
        lambda: pick(p["gibberish"]),
    )
    out: set[str] = set()
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        s = re.sub(r"\s+", " ", pick(forms)()).strip()
        if rng.random() < 0.05:
            s = _typo(s, rng)
        out.add(s)
    return sorted(out)


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip() or text.strip()


def _is_val(text: str) -> bool:
    return int(hashlib.sha1(_norm(text).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VAL_SHARE


def hand_written(path: Path = CORPUS_PATH) -> dict:
    """The hand-written sentences: a v2 corpus as it is, or the ``hand`` section of a v3 one."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return data.get("hand") or {"train": data["train"], "val": data["val"]}


#: The planner's held-out set: its sentences are never put in the corpus (a template can make one by chance).
HELDOUT_PATH = Path(__file__).resolve().parents[2] / "tests" / "data" / "heldout_instructions.jsonl"


def heldout_texts(path: Path = HELDOUT_PATH) -> set[str]:
    if not path.is_file():
        return set()
    with open(path, encoding="utf-8") as fh:
        return {_norm(json.loads(line)["text"]) for line in fh if line.strip()}


def build(hand: dict, seed: int = SEED, exclude: set[str] | None = None) -> dict:
    """The v3 corpus: ``hand`` as it is plus generated sentences (none in ``exclude``, normalised texts)."""
    rng = random.Random(seed)
    seen = {_norm(t) for split in hand.values() for v in split.values() for t in v}
    seen |= heldout_texts() if exclude is None else exclude
    train = {c: list(hand["train"][c]) for c in STUDIO_CLASSES}
    val = {c: list(hand["val"][c]) for c in STUDIO_CLASSES}
    for cls in STUDIO_CLASSES:
        made = _unrelated_sentences(rng, UNRELATED) if cls == "unrelated" else _class_sentences(cls, rng, PER_CLASS)
        for s in made:
            key = _norm(s)
            if key in seen:
                continue
            seen.add(key)
            (val if _is_val(s) else train)[cls].append(s)
    return {"version": VERSION, "classes": list(STUDIO_CLASSES), "train": train, "val": val,
            "generator": {"module": "engine.training.corpus", "seed": seed, "per_class": PER_CLASS,
                          "unrelated": UNRELATED, "val_share": VAL_SHARE}, "hand": hand}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CORPUS_PATH)
    ap.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = ap.parse_args(argv)
    corpus = build(hand_written(args.out))
    text = json.dumps(corpus, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = args.out.read_text(encoding="utf-8") == text
        print("corpus is up to date" if same else "corpus differs from what the generator makes")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    sizes = {s: sum(len(v) for v in corpus[s].values()) for s in ("train", "val")}
    print(f"wrote {args.out}: version {VERSION}, {sizes['train']} train and {sizes['val']} val sentences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
