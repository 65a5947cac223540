"""Conservative spelling correction of instructions toward the restoration vocabulary.

The frozen sentence encoder splits a misspelled word into word pieces that
mean little ("grian" -> "gr ##ian"), so "get rid of the grian" lands far from
"get rid of the grain". Before embedding, :class:`SpellingCorrector` replaces
such words by the closest word of the restoration domain; it leaves alone:

- words it knows: whole-word tokens of the encoder's tokenizer (``vocab.txt``),
  the domain vocabulary (the corpus' train split plus :data:`DOMAIN_WORDS`),
  a few photo words that are not restoration (:data:`PROTECTED_WORDS`), and
  regular inflections, bases and prefix/suffix derivations of all these
  ("whiter", "blacks", "pixelate", "undarken", "preset", "colorize");
- words shorter than :data:`MIN_LENGTH` letters, and letters glued to digits
  ("4x", "1080p", "40%");
- unknown words with no domain word close enough: a single swap of adjacent
  letters ("grian" -> "grain"), else a :mod:`difflib` ratio of at least
  :data:`CUTOFF` with the same first letter and at most one letter more or
  less ("noize" -> "noise", "deblok" -> "deblock"; not "halved" -> "have").

Real words that the tokenizer lacks and that are one letter away from a domain
word can still be changed ("modal" -> "model"): there is no dictionary here,
only the tokenizer's ~21,000 whole words.

The train split itself contains deliberate misspellings ("remvoe the nosie"),
so a train word only counts as known when it is a real word, or when it is not
itself a near miss of a domain word.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from engine.model.encoders import packaged_minilm_path

MIN_LENGTH = 4
CUTOFF = 0.8

#: Letters only, word-bounded: "4x", "1080p", "x2" and "40%" never match.
_WORD = re.compile(r"\b[^\W\d_]+\b")

#: Restoration words the tokenizer lacks as whole words (or that the corpus may not spell out).
DOMAIN_WORDS = frozenset("""
    noise noisy noises denoise denoised denoising denoiser grain grainy graininess speckle speckles speckled
    specks blotchy blotches chroma luminance gaussian static
    blur blurry blurred blurring blurriness deblur deblurred deblurring unblur defocus defocused sharpen sharpened
    sharpening sharpness sharper focus smeared smearing shaky
    rain rainy raindrops raindrop derain deraining drizzle downpour rainstorm streaks
    haze hazy haziness dehaze dehazed dehazing fog foggy fogginess defog mist misty smog smoggy
    dark darker brighten brightened brightening brighter lighten underexposed underexposure underlit backlit
    illuminate exposure shadows dim
    enhance enhancement contrast saturation saturate saturated vibrance vibrancy vibrant colour color colours
    colors tint retouch neutralize balance
    upscale upscaled upscaling upsample upsampling upres enlarge resolution pixelated pixelation lowres resample
    jpeg jpg dejpeg deblock deblocking blocky blockiness banding compression compressed artifacts artefacts
    halos ringing bitrate
    remove photo picture image please slightly strongly
""".split())

#: Photo words that are not restoration: known, never a replacement, so e.g. "bokeh" never becomes "broke".
PROTECTED_WORDS = frozenset("""
    bokeh grayscale greyscale monochrome sepia selfie selfies photobomb photobomber photobombed watermark
    watermarks instagram whatsapp facebook tiktok png tiff heic webp lightroom photoshop gimp emoji vignette
    collage meme caption captions hdr raw exif preset presets polaroid airbrush headshot timelapse sticker
    stickers screenshot thumbnail wallpaper retro redo cant dont wont isnt arent didnt doesnt wasnt werent couldnt
    wouldnt shouldnt hasnt havent thats whats youre theyre ive
""".split())

_PREFIXES = ("un", "de", "re", "pre", "post", "over", "under", "non", "mis", "dis", "super", "sub", "auto", "photo",
             "multi", "anti", "semi")
_SUFFIXES = ("es", "ed", "er", "est", "ing", "ly", "y", "en", "ize", "ise", "ized", "ised", "izing", "ising",
             "ful", "less", "ness", "ment", "able", "ish")
_BASE_OF = ("s", "d", "r", "es", "ed", "er", "ing", "y")
_VOWEL_GROUP = re.compile(r"[aeiou]+")


def tokenizer_words(encoder_path: str | os.PathLike) -> frozenset[str]:
    """Whole-word (not ``##``) alphabetic tokens of a BERT-style tokenizer's ``vocab.txt``."""
    with open(Path(encoder_path) / "vocab.txt", encoding="utf-8") as fh:
        return frozenset(t for t in (line.strip() for line in fh) if t.isalpha())


def _needs_doubling(stem: str) -> bool:
    """One syllable ending consonant-vowel-consonant ("blur", "dim"): "blured" is a misspelling of "blurred"."""
    return (len(_VOWEL_GROUP.findall(stem)) == 1 and len(stem) >= 3 and stem[-1] not in "aeiouwxy"
            and stem[-2] in "aeiou" and stem[-3] not in "aeiou")


def _derived(word: str, known: frozenset[str] | set[str]) -> bool:
    """Regular inflection or derivation of a known word ("whiter", "blacks", "colorize", "undarken", "preset")."""
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and word[:-1] in known:
        return True
    for suffix in _SUFFIXES:
        stem = word[: -len(suffix)]
        if not word.endswith(suffix) or len(stem) < 3:
            continue
        vowel_suffix = suffix[0] in "aeiouy"
        if (stem in known and not (vowel_suffix and _needs_doubling(stem))) or stem + "e" in known or (
                stem[-1] == stem[-2] and stem[:-1] in known) or (stem[-1] == "i" and stem[:-1] + "y" in known):
            return True
    if any(word + suffix in known for suffix in _BASE_OF):
        return True  # the base of a known word: "pixelate" (of "pixelated"), "smear" (of "smeared")
    return any(word.startswith(p) and len(word) - len(p) >= 3 and word[len(p):] in known for p in _PREFIXES)


def _transpositions(word: str) -> set[str]:
    return {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}


class SpellingCorrector:
    """``corrector(text)``: the instruction with unknown words replaced by their closest domain word."""

    def __init__(self, vocabulary: Iterable[str], corpus: Iterable[str] = (), *,
                 domain: Iterable[str] = DOMAIN_WORDS, protected: Iterable[str] = PROTECTED_WORDS,
                 cutoff: float = CUTOFF, min_length: int = MIN_LENGTH) -> None:
        self.cutoff, self.min_length = cutoff, min_length
        counts = Counter(w.lower() for text in corpus for w in _WORD.findall(text))
        base = frozenset(vocabulary) | frozenset(domain) | frozenset(protected)
        real = {w for w in counts if w in base or _derived(w, base)}
        #: Replacement candidates: the domain list and real words used at least twice in the corpus (a rare word
        #: such as "reset" would otherwise pull in real words the tokenizer lacks, such as "preset").
        self._targets = {w: counts.get(w, 0) + 1 for w in {w for w in real if counts[w] >= 2} | set(domain)
                         if len(w) >= 3}
        # Indexed by first letter: typos rarely change the first letter, so only candidates that start like
        # the word (or, as a swap, like its second letter: "rgain") are tried; fewer false friends, ~10x faster.
        self._by_letter: dict[str, list[str]] = {}
        for w in sorted(self._targets):
            self._by_letter.setdefault(w[0], []).append(w)
        self._known = set(base) | real
        # The corpus' other words are known unless they are near misses of a candidate ("remvoe", "nosie").
        self._known |= {w for w in counts if w not in self._known and self._closest(w) is None}
        self._memo: dict[str, str] = {}

    def known(self, word: str) -> bool:
        w = word.lower()
        return w in self._known or _derived(w, self._known)

    def _closest(self, word: str) -> str | None:
        n = len(word)
        swaps = _transpositions(word)
        best, best_key = None, (0.0, 0)
        matcher = difflib.SequenceMatcher(None, "", word)
        for letter in dict.fromkeys(word[:2]):
            for cand in self._by_letter.get(letter, ()):
                m = len(cand)
                if cand == word or 2 * min(n, m) / (n + m) < self.cutoff:
                    continue
                if cand in swaps:
                    score = 1.0
                elif letter != word[0] or abs(n - m) > 1:
                    continue  # second letter: only as a swap ("rgain"); one letter more or less at most
                else:
                    matcher.set_seq1(cand)
                    if matcher.real_quick_ratio() < self.cutoff or matcher.quick_ratio() < self.cutoff:
                        continue
                    score = matcher.ratio()
                    if score < self.cutoff:
                        continue
                key = (score, self._targets[cand])
                if key > best_key:
                    best, best_key = cand, key
        return best

    def correct_word(self, word: str) -> str:
        """The replacement for one word (itself when known, short or without a close domain word)."""
        lower = word.lower()
        if lower not in self._memo:
            fix = None
            if len(lower) >= self.min_length and not self.known(lower):
                fix = self._closest(lower)
            self._memo[lower] = fix or lower
        fix = self._memo[lower]
        if fix == lower:
            return word
        if word.isupper() and len(word) > 1:
            return fix.upper()
        return fix.capitalize() if word[0].isupper() else fix

    def __call__(self, text: str) -> str:
        return _WORD.sub(lambda m: self.correct_word(m.group(0)), text)


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _corrector_for(encoder_path: str) -> SpellingCorrector | None:
    path = Path(encoder_path)
    if not (path / "vocab.txt").is_file():
        return None  # not a word-piece tokenizer we can read: leave the text alone
    try:
        from engine.model.instructions import load_corpus

        train = load_corpus()["train"]
        corpus = [t for texts in train.values() for t in texts]
    except (OSError, ValueError, KeyError):
        corpus = []  # e.g. a frozen app without the corpus: the hand-written domain words still apply
    return SpellingCorrector(tokenizer_words(path), corpus)


def corrector_for(encoder_path: str | os.PathLike | None = None) -> SpellingCorrector | None:
    """The shared corrector for an encoder folder (default: the packaged all-MiniLM-L6-v2); None without a vocab."""
    if encoder_path is None:
        encoder_path = packaged_minilm_path()
    with _lock:
        return _corrector_for(str(Path(encoder_path).resolve()))


def correct_spelling(text: str, encoder_path: str | os.PathLike | None = None) -> str:
    """``text`` with misspelled words corrected toward the restoration vocabulary (unchanged without a vocab)."""
    corrector = corrector_for(encoder_path)
    return corrector(text) if corrector else text
