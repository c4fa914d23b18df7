"""The emotion taxonomy shared by every corpus and model, and the label codes of known corpora.

Corpora name the same emotion differently (EmoDB's ``W`` for *Ärger*, RAVDESS's ``05``, CREMA-D's
``ANG``); mapping them all onto one canonical set is what lets a model trained on one corpus be
evaluated on another and lets corrections from the app merge with any corpus.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
)

# EmoDB file names carry the German initial of the emotion at character 6 (``03a01Fa.wav``).
EMODB: dict[str, str] = {
    "W": "angry",  # Ärger (Wut)
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fearful",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}

# RAVDESS: third field of ``03-01-EE-II-SS-RR-AA.wav``.
RAVDESS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}

# CREMA-D: third field of ``1001_DFA_ANG_XX.wav``.
CREMA_D: dict[str, str] = {
    "NEU": "neutral",
    "HAP": "happy",
    "SAD": "sad",
    "ANG": "angry",
    "FEA": "fearful",
    "DIS": "disgust",
}

# TESS: last word of ``OAF_back_angry.wav`` / folder ``YAF_pleasant_surprised``.
TESS: dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "fear": "fearful",
    "disgust": "disgust",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
}

# EMOVO (Italian): first field of ``rab-f1-b2.wav``.
EMOVO: dict[str, str] = {
    "neu": "neutral",
    "gio": "happy",  # gioia
    "tri": "sad",  # tristezza
    "rab": "angry",  # rabbia
    "pau": "fearful",  # paura
    "dis": "disgust",  # disgusto
    "sor": "surprised",  # sorpresa
}

# TurEV-DB (Turkish): second field of ``1358_sk_beste.wav``.
TUREV: dict[str, str] = {
    "kz": "angry",  # kizgin
    "sk": "calm",  # sakin
    "mt": "happy",  # mutlu
    "hl": "sad",  # huzunlu
}

# Spellings people and other datasets use for the canonical names.
SYNONYMS: dict[str, str] = {
    "neu": "neutral",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "exc": "happy",
    "sadness": "sad",
    "anger": "angry",
    "ang": "angry",
    "fear": "fearful",
    "anxiety": "fearful",
    "disgusted": "disgust",
    "surprise": "surprised",
    "sur": "surprised",
    "bored": "boredom",
}

# The 4-class set used for cross-corpus work (IEMOCAP-style).
FOUR_CLASS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")


def canonical(label: str) -> str:
    """Return the canonical emotion name for a label spelled any common way.

    Raises KeyError for a label that is not an emotion of the taxonomy, so that a typo in a CSV
    is reported rather than becoming a new class.
    """
    key = str(label).strip().lower().replace(" ", "_").replace("-", "_")
    if key in EMOTIONS:
        return key
    if key in SYNONYMS:
        return SYNONYMS[key]
    if key in TESS:
        return TESS[key]
    raise KeyError(f"unknown emotion label {label!r}; known: {', '.join(EMOTIONS)}")
