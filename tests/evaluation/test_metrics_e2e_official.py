"""E2E metrics against the official scorer's own numbers, and our PTB tokeniser against Stanford's.

The official values were computed with tuetschek/e2e-metrics and pycocoevalcap's jars (see
data/e2e_official/README.md). Tests that run Java skip without it, except under CI=true.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rosa.evaluation.scoring import compute_metrics
from rosa.metrics import e2e
from rosa.metrics import meteor as meteor_module
from rosa.metrics.meteor import MeteorUnavailable, meteor_command
from rosa.metrics.tokenizers import PTB_DROPPED_PUNCT, ptb_tokenize

CI = os.environ.get("CI", "").lower() == "true"
FIXTURE = Path(__file__).parent / "data" / "e2e_official"
OFFICIAL = {  # measure_scores.py -p, full precision
    "template": {
        "bleu": 0.5000395489455606,
        "nist": 6.401240607480333,
        "meteor": 0.4075557319599282,
        "rouge_l": 0.5962503958503766,
        "cider": 2.2829140060080544,
    },
    "short": {
        "bleu": 0.19836258347190672,
        "nist": 0.08320022665790403,
        "meteor": 0.15837730527546903,
        "rouge_l": 0.4464095524735837,
        "cider": 0.609133984773947,
    },
}


@pytest.fixture(scope="module")
def java_meteor():
    """The Meteor 1.5 command line (Java + pycocoevalcap), or a skip (a failure under CI)."""
    try:
        return meteor_command()
    except MeteorUnavailable as exc:
        if CI:
            pytest.fail(f"Meteor 1.5 must run under CI: {exc}")
        pytest.skip(f"Meteor 1.5 cannot run here: {exc}")


def fixture_references() -> list[list[str]]:
    return [
        block.splitlines() for block in (FIXTURE / "references.txt").read_text(encoding="utf-8").strip().split("\n\n")
    ]


def fixture_outputs(system: str) -> list[str]:
    return (FIXTURE / f"outputs-{system}.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("system", sorted(OFFICIAL))
def test_all_five_metrics_equal_the_official_scorer(system, java_meteor):
    scores = compute_metrics("e2e", fixture_outputs(system), fixture_references())
    assert list(scores) == list(e2e.METRICS)
    for name, official in OFFICIAL[system].items():
        assert scores[name] == pytest.approx(official, rel=1e-6), name  # the target is 1%; we match exactly


def test_without_java_meteor_is_reported_as_meteor_nltk(monkeypatch):
    def no_java():
        raise MeteorUnavailable("no Java runtime on PATH")

    monkeypatch.setattr(meteor_module, "meteor_command", no_java)
    monkeypatch.setattr(meteor_module, "_process", None)
    with pytest.warns(RuntimeWarning, match="meteor_nltk") as caught:
        scores = compute_metrics("e2e", fixture_outputs("template"), fixture_references())
    assert len([w for w in caught if "Meteor 1.5 cannot run" in str(w.message)]) == 1
    assert list(scores) == ["bleu", "nist", "meteor_nltk", "rouge_l", "cider"]  # never under the official name
    assert scores["bleu"] == pytest.approx(OFFICIAL["template"]["bleu"], rel=1e-9)


def test_meteor_process_is_reused_and_survives_a_dead_java(java_meteor):
    refs, outs = fixture_references()[:3], fixture_outputs("template")[:3]
    tokens = [ptb_tokenize(o) for o in outs], [[ptb_tokenize(r) for r in rr] for rr in refs]
    first = e2e.meteor(*tokens)
    process = meteor_module._process
    assert e2e.meteor(*tokens) == first and meteor_module._process is process  # one Java start per Python process
    process._proc.kill()
    process._proc.wait()
    assert e2e.meteor(*tokens) == first  # a new process replaces the dead one


# ----------------------------------------------------------------------------------- tokeniser
STANFORD_CASES = [  # constructs where a simpler PTB tokeniser parts from Stanford's 3.4.1
    "Prices are £20-25, 20£-25, £-25 or 20 -25; it costs €30 and 5¢.",
    "A 5-star, 3-star-rated place: 5of5 food, 1990s decor, open at 5pm.",
    "It is in the city center., near it. Low., located on Chesterton Rd. near Main St. now.",
    "Prices are less than £ 20. Close the Express by Holiday Inn. 's area riverside.",
    "It's the kids' place, don't, won't, cannot -- \"family-friendly\" (yes) [x] {y}.",
]


def stanford_tokens(sentences: list[str], java_cp: Path) -> list[list[str]]:
    """The official pipeline's tokens: Stanford PTBTokenizer -preserveLines -lowerCase, punctuation dropped."""
    text = "\n".join(s.replace("\n", " ") for s in sentences)
    out = subprocess.run(
        ["java", "-cp", str(java_cp), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"],
        input=text,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    )
    lines = out.stdout.split("\n")[: len(sentences)]
    return [[t for t in line.split(" ") if t and t.lower() not in PTB_DROPPED_PUNCT] for line in lines]


def test_ptb_tokenize_equals_stanford(java_meteor):
    _, meteor_dir = java_meteor
    jar = meteor_dir.parent / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    sentences = STANFORD_CASES + [r for refs in fixture_references() for r in refs] + fixture_outputs("template")
    assert [ptb_tokenize(s) for s in sentences] == stanford_tokens(sentences, jar)
