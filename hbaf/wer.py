"""The word error rate of English transcripts, raw and normalised.

Used to score the recogniser (the benchmark, the studies, the tests); the runtime does not need it.

- ``basic_words``: case and punctuation ignored (the "raw" WER);
- ``normalize_words``: the standard, spelling-insensitive form (numbers spelled out, one spelling
  per word, contractions expanded, fillers dropped);
- ``word_error_rate`` of one pair, ``corpus_wer`` over many (total errors / total reference words).
"""

from __future__ import annotations

import re

_PUNCT = re.compile(r"[^\w\s']|_")


def basic_words(text: str) -> list[str]:
    """Lower case, punctuation dropped (apostrophes inside words kept, hyphens split), split on
    whitespace: the "raw" word sequence, with no spelling normalisation."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


# ----------------------------------------------------------------------------- WER normalisation
#
# The usual way to score English ASR is on normalised text, so that the WER counts
# misrecognised words and not spelling conventions: "OK" vs "okay", "y'know" vs "you know",
# "27" vs "twenty-seven", "Mr." vs "mister", "uhh" (a filler that recognisers drop). Both the
# reference and the hypothesis go through the same steps.

_FILLERS = frozenset("uh uhh uhhh um umm ummm hm hmm hmmm mm mmm mhm mmhmm er erm ah ahh".split())

# one spoken form for words that are written several ways (after lower-casing and
# apostrophes made straight); multi-word results are split later
_SPELLINGS = {
    "ok": "okay", "o.k.": "okay", "o.k": "okay", "k": "okay", "alright": "all right",
    "y'know": "you know", "ya'know": "you know", "yknow": "you know",
    "'em": "them", "em": "them", "'cause": "because", "cause": "because", "cuz": "because", "'cos": "because", "cos": "because",
    "gonna": "going to", "wanna": "want to", "gotta": "got to", "hafta": "have to", "kinda": "kind of",
    "sorta": "sort of", "outta": "out of", "lotta": "lot of", "gimme": "give me", "lemme": "let me",
    "c'mon": "come on", "cmon": "come on", "dunno": "do not know", "ya": "you", "'til": "until", "till": "until",
    "mr": "mister", "mr.": "mister", "mrs": "missus", "mrs.": "missus", "ms.": "miss", "dr": "doctor", "dr.": "doctor",
    "st.": "saint", "vs": "versus", "vs.": "versus", "&": "and", "%": "percent", "+": "plus",
    "goodbye": "good bye", "bye-bye": "bye bye", "everytime": "every time", "anymore": "any more",
    "whaddya": "what do you", "watcha": "what are you", "whatcha": "what are you",
    "colour": "color", "favourite": "favorite", "favour": "favor", "honour": "honor", "humour": "humor",
    "neighbour": "neighbor", "behaviour": "behavior", "realise": "realize", "realised": "realized",
    "apologise": "apologize", "organise": "organize", "theatre": "theater", "centre": "center",
    "won't": "will not", "can't": "can not", "cannot": "can not", "shan't": "shall not", "ain't": "is not",
    "grey": "gray", "cheque": "check", "mum": "mom", "towards": "toward", "afterwards": "afterward",
}

# contraction endings -> their full words ("'s" is left alone: is / has / possessive is ambiguous)
_CONTRACTIONS = (
    ("n't", " not"), ("'re", " are"), ("'ll", " will"), ("'ve", " have"),
    ("'m", " am"), ("'d", " would"),
)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """A non-negative integer in English words, without "and" or hyphens (1999 -> "one thousand nine
    hundred ninety nine"); a four-digit year-like number is read in pairs ("nineteen ninety nine")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if 1100 <= n < 2000 or (2010 <= n < 2100):  # years are said in pairs
        hi, lo = divmod(n, 100)
        return number_words(hi) + (" hundred" if lo == 0 else (" oh " + _ONES[lo] if lo < 10 else " " + number_words(lo)))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)  # unreachable


def _ordinal(words: str) -> str:
    *head, last = words.split()
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(head + [last])


_NUMBER = re.compile(r"(?<![\w.])(\$?)(\d[\d,]*)(\.\d+)?(st|nd|rd|th|s|%)?(?!\w)")


def _spell_numbers(text: str) -> str:
    """Digits -> words: "27" -> "twenty seven", "2nd" -> "second", "$5" -> "five dollars",
    "1.5" -> "one point five", "90s" -> "ninety s"... written the way they are said."""

    def say(m: re.Match) -> str:
        dollar, digits, frac, suffix = m.group(1), m.group(2).replace(",", ""), m.group(3), m.group(4) or ""
        if len(digits) > 12:
            return m.group(0)
        words = number_words(int(digits)) if not (len(digits) > 1 and digits.startswith("0")) else " ".join(_ONES[int(d)] for d in digits)
        if frac:
            words += " point " + " ".join(_ONES[int(d)] for d in frac[1:])
        if suffix in ("st", "nd", "rd", "th"):
            words = _ordinal(words)
        elif suffix == "s":
            words = (words[:-1] + "ies") if words.endswith("y") else words + "s"
        elif suffix == "%":
            words += " percent"
        if dollar:
            words += " dollars"
        return f" {words} "

    text = re.sub(r"(\d)\s*:\s*(\d\d)\b", lambda m: f"{m.group(1)} {int(m.group(2)) or ''}", text)  # 5:30 -> 5 30, 5:00 -> 5
    return _NUMBER.sub(say, text)


def normalize_words(text: str) -> list[str]:
    """English text -> the word sequence that WER is computed on (the standard way).

    Lower case; curly apostrophes straightened; bracketed asides ([laughs], (sighs)) removed;
    numbers spelled out; common spelling variants and informal contractions given one form
    (okay/OK, y'know, 'em, gonna, Mr., British spellings); "n't", "'re", "'ll", "'ve", "'m",
    "'d" expanded; hyphens split words; other punctuation dropped; fillers (uh, um, hmm, ...)
    removed, since they carry no words and recognisers routinely leave them out.
    """
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text)
    text = _spell_numbers(text)
    out: list[str] = []
    for token in text.replace("-", " ").replace("/", " ").split():
        word = token.strip("\"!?,;:()[]{}<>*~.")
        word = _SPELLINGS.get(word, _SPELLINGS.get(word.rstrip("'"), word))
        for old, full in _CONTRACTIONS:
            if word.endswith(old) and len(word) > len(old):
                word = word[: len(word) - len(old)] + full
                break
        for piece in _PUNCT.sub(" ", word).split():
            piece = piece.strip("'").replace("'", "")
            piece = _SPELLINGS.get(piece, piece)
            for w in piece.split():
                if w and w not in _FILLERS:
                    out.append(w)
    return out


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]


def word_error_rate(ref: str, hyp: str, *, normalize: bool = True) -> float:
    """(substitutions + deletions + insertions) / reference words.

    ``normalize`` True: on ``normalize_words`` (the standard, spelling-insensitive score);
    False: on ``basic_words`` (only case and punctuation ignored; the "raw" WER).
    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    split = normalize_words if normalize else basic_words
    r, h = split(ref), split(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return word_errors(r, h) / len(r)


def corpus_wer(pairs: list[tuple[str, str]], *, normalize: bool = True) -> float:
    """WER over many utterances: total word errors / total reference words (each pair aligned
    on its own, so one utterance's errors cannot spill into the next)."""
    split = normalize_words if normalize else basic_words
    errors = words = 0
    for ref, hyp in pairs:
        r, h = split(ref), split(hyp)
        errors += word_errors(r, h)
        words += len(r)
    return errors / words if words else 0.0
