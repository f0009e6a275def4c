"""Reference text for the long-form file of scripts/bench-asr, and the WER normaliser.

The paragraphs are openings of public-domain works (Austen, Dickens, Melville, Lincoln, Carroll,
the Declaration of Independence, Conan Doyle, Poe, Shelley, Bronte, Thoreau), lightly edited so
that the reference is exactly what espeak-ng is asked to say: American spelling (Whisper writes
"neighborhood", not "neighbourhood"), no digits, "someone" as one word. "Mr." and "Mrs." are
kept on purpose: the normaliser maps them to "mister" and "missus".
"""

from __future__ import annotations

import re
import unicodedata

PARAGRAPHS = [
    # Jane Austen, Pride and Prejudice (1813), chapter 1
    "It is a truth universally acknowledged, that a single man in possession of a good fortune "
    "must be in want of a wife. However little known the feelings or views of such a man may be on "
    "his first entering a neighborhood, this truth is so well fixed in the minds of the surrounding "
    "families, that he is considered the rightful property of someone or other of their daughters. "
    "My dear Mr. Bennet, said his lady to him one day, have you heard that Netherfield Park is let "
    "at last? Mr. Bennet replied that he had not. But it is, returned she, for Mrs. Long has just "
    "been here, and she told me all about it.",
    # Charles Dickens, A Tale of Two Cities (1859), book 1 chapter 1
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
    "of light, it was the season of darkness, it was the spring of hope, it was the winter of "
    "despair. We had everything before us, we had nothing before us, we were all going direct to "
    "heaven, we were all going direct the other way.",
    # Herman Melville, Moby-Dick (1851), chapter 1
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in "
    "my purse, and nothing particular to interest me on shore, I thought I would sail about a little "
    "and see the watery part of the world. It is a way I have of driving off the spleen and "
    "regulating the circulation. Whenever I find myself growing grim about the mouth, whenever it is "
    "a damp, drizzly November in my soul, then I account it high time to get to sea as soon as I can.",
    # Abraham Lincoln, the Gettysburg Address (1863)
    "Four score and seven years ago our fathers brought forth on this continent a new nation, "
    "conceived in liberty, and dedicated to the proposition that all men are created equal. Now we "
    "are engaged in a great civil war, testing whether that nation, or any nation so conceived and "
    "so dedicated, can long endure. We are met on a great battlefield of that war. We have come to "
    "dedicate a portion of that field as a final resting place for those who here gave their lives "
    "that that nation might live. It is altogether fitting and proper that we should do this.",
    # Jane Austen, Sense and Sensibility (1811), chapter 1
    "The family of Dashwood had long been settled in Sussex. Their estate was large, and their "
    "residence was at Norland Park, in the center of their property, where, for many generations, "
    "they had lived in so respectable a manner as to engage the general good opinion of their "
    "surrounding acquaintance.",
    # Lewis Carroll, Alice's Adventures in Wonderland (1865), chapter 1
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do. Once or twice she had peeped into the book her sister was reading, but it had no "
    "pictures or conversations in it, and what is the use of a book, thought Alice, without pictures "
    "or conversations? So she was considering in her own mind, as well as she could, for the hot day "
    "made her feel very sleepy and stupid, whether the pleasure of making a daisy chain would be "
    "worth the trouble of getting up and picking the daisies, when suddenly a white rabbit with pink "
    "eyes ran close by her.",
    # The Declaration of Independence (1776)
    "When in the course of human events it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another, and to assume among the powers of the "
    "earth the separate and equal station to which the laws of nature and of nature's God entitle "
    "them, a decent respect to the opinions of mankind requires that they should declare the causes "
    "which impel them to the separation. We hold these truths to be self-evident, that all men are "
    "created equal.",
    # Arthur Conan Doyle, A Scandal in Bohemia (1891)
    "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other "
    "name. In his eyes she eclipses and predominates the whole of her sex. It was not that he felt "
    "any emotion akin to love for Irene Adler. All emotions, and that one particularly, were "
    "abhorrent to his cold, precise but admirably balanced mind.",
    # Edgar Allan Poe, The Raven (1845)
    "Once upon a midnight dreary, while I pondered, weak and weary, over many a quaint and curious "
    "volume of forgotten lore, while I nodded, nearly napping, suddenly there came a tapping, as of "
    "someone gently rapping, rapping at my chamber door.",
    # Mary Shelley, Frankenstein (1818), letter 1
    "You will rejoice to hear that no disaster has accompanied the commencement of an enterprise "
    "which you have regarded with such evil forebodings. I arrived here yesterday, and my first task "
    "is to assure my dear sister of my welfare and increasing confidence in the success of my "
    "undertaking.",
    # Charlotte Bronte, Jane Eyre (1847), chapter 1
    "There was no possibility of taking a walk that day. We had been wandering, indeed, in the "
    "leafless shrubbery an hour in the morning, but since dinner the cold winter wind had brought "
    "with it clouds so somber, and a rain so penetrating, that further outdoor exercise was now out "
    "of the question.",
    # Henry David Thoreau, Walden (1854), chapter 2
    "I went to the woods because I wished to live deliberately, to front only the essential facts of "
    "life, and see if I could not learn what it had to teach, and not, when I came to die, discover "
    "that I had not lived.",
]

# Whole-word replacements applied after punctuation is stripped.
ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}

_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015-"


def normalise(text: str) -> list[str]:
    """Words for WER. Unicode NFKC, lowercase; hyphens and dashes become spaces ("self-evident" ->
    "self evident"); apostrophes are dropped ("nature's" -> "natures"); any other character that
    is not a letter, digit or space becomes a space; "mr"/"mrs"/"dr" become "mister"/"missus"/
    "doctor". Numbers are not spelled out (the references hold none)."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(f"[{re.escape(_DASHES)}]", " ", t)
    t = re.sub(r"['\u2018\u2019`]", "", t)
    t = re.sub(r"[^\w\s]|_", " ", t)
    return [ABBREVIATIONS.get(w, w) for w in t.split()]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) after normalise()."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return edit_distance(ref, hyp), len(ref)
