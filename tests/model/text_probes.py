"""A small hand-written probe set for the text branch (issue #15): what the words say, in the
transcript style of the live monitor (lower case, no punctuation after normalisation).

``tests/model/test_default_model.py`` asserts the clear cases; ``probe_scores`` prints every
group's scores (the model card quotes them, sarcasm included, which is measured, not asserted)."""

from __future__ import annotations

PROBES: dict[str, list[str]] = {
    "positive": [
        "i absolutely loved this movie it was wonderful",
        "the food was delicious and the staff were so friendly",
        "this is the best phone i have ever owned",
        "what a fantastic performance i was moved to tears",
        "i am really happy with how everything turned out",
    ],
    "negative": [
        "this was a terrible boring waste of time",
        "the service was awful and the room was dirty",
        "i hated every minute of it",
        "worst purchase i have ever made it broke after a day",
        "i am so disappointed and angry about this",
    ],
    "negated_negative": [  # a negated negative word: not negative
        "not bad at all",
        "i do not hate it",
        "it was not boring in the slightest",
        "honestly it was not a waste of money",
    ],
    "negated_positive": [  # a negated positive word: not positive
        "it was not good at all",
        "i did not like it",
        "the ending was not very interesting",
        "i would not recommend it to anyone",
    ],
    "neutral": [  # statements of fact: near 0
        "the meeting starts at three oclock in the second room",
        "the report has twelve pages and two tables",
        "the train leaves from platform four",
        "she moved to chicago in two thousand and ten",
        "the store opens at nine on weekdays",
    ],
    "sarcasm": [  # negative intent in positive words: measured only
        "oh great another monday i just love waiting in traffic",
        "wow what a brilliant idea to cancel the flight an hour before",
        "yeah because that worked so well last time",
        "fantastic the printer is broken again",
    ],
}


def probe_scores(loaded) -> dict[str, list[float]]:
    """Text scores of every probe with a loaded checkpoint (``mmsa.model.load_checkpoint``)."""
    import torch

    from mmsa.model import Sample, collate

    out = {}
    model = loaded.model.eval()
    with torch.no_grad():
        for group, texts in PROBES.items():
            batch = collate([Sample(text=t) for t in texts], loaded.tokenizer, loaded.features)
            out[group] = [round(float(s), 3) for s in model(batch).unimodal["text"]]
    return out


if __name__ == "__main__":
    import json
    import sys

    from mmsa.model import load_checkpoint

    print(json.dumps(probe_scores(load_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "default")), indent=1))
