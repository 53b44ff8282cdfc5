"""The METEOR fallback without Java works offline: WordNet set-up (no nltk.download) and NLTK scoring."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pytest

from rosa.metrics import e2e
from rosa.metrics import wordnet as wnmod
from rosa.metrics.meteor import MeteorUnavailable

CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def wordnet():
    try:
        return wnmod.load_wordnet()
    except wnmod.WordNetUnavailable as exc:
        if CI:
            pytest.fail(f"METEOR must work under CI: {exc}")
        pytest.skip(f"WordNet not available: {exc}")


def test_lexnames_is_the_wordnet_3_0_list():
    lines = wnmod.LEXNAMES.splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2" and lines[2] == "02\tadv.all\t4" and lines[44] == "44\tadj.ppl\t3"
    man = Path("/usr/share/man/man5/lexnames.5WN.gz")  # Debian's wordnet-base documents the list
    if man.is_file():
        table = re.findall(r"^(\d\d)\t(\S+)\s*\t", gzip.open(man, "rt", encoding="latin-1").read(), re.M)
        assert [(f"{i:02d}", line.split("\t")[1]) for i, line in enumerate(lines)] == table


def test_build_from_system_wordnet(tmp_path, monkeypatch):
    if wnmod._system_wordnet_dir() is None:
        if CI:
            pytest.fail("no system WordNet under CI: apt-get install -y --no-install-recommends wordnet-base")
        pytest.skip("no system WordNet (apt-get install wordnet-base)")
    monkeypatch.setattr(wnmod, "_find_nltk_wordnet", lambda d: None)  # force the build step
    root = wnmod.ensure_wordnet(tmp_path, allow_download=False)
    assert Path(root) == tmp_path / "corpora" / "wordnet"
    assert (Path(root) / "lexnames").read_text() == wnmod.LEXNAMES
    assert (Path(root) / "data.noun").is_file() and not (Path(root) / "data.noun").is_symlink()
    wn = wnmod.load_wordnet(str(tmp_path), allow_download=False)
    assert "big" in {lemma.name() for s in wn.synsets("large") for lemma in s.lemmas()}
    assert wn.synsets("dog")[0].lexname() == "noun.animal"  # lexnames are read correctly


def test_missing_wordnet_gives_one_line_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(wnmod, "_find_nltk_wordnet", lambda d: None)
    monkeypatch.setattr(wnmod, "SYSTEM_WORDNET_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(wnmod.WordNetUnavailable) as err:
        wnmod.ensure_wordnet(tmp_path, allow_download=False)
    msg = str(err.value)
    assert "\n" not in msg and "wordnet-base" in msg and "nltk.downloader" in msg


def test_meteor_uses_wordnet_synonyms(wordnet):
    # "a fast car" vs "a fast auto": 3 matches (car~auto via WordNet), P = R = 1, Fmean = 1,
    # one chunk -> penalty gamma * (chunks/matches)^beta = .6 * (1/3)^.2 (Meteor 1.5's gamma, beta)
    got = e2e.meteor_nltk([["a", "fast", "car"]], [[["a", "fast", "auto"]]], wordnet=wordnet)
    assert got == pytest.approx(1 - 0.6 * (1 / 3) ** 0.2, rel=1e-12)
    # no synonym: 2 matches, P = R = 2/3, one chunk ("a fast") -> (1 - .6 * (1/2)^.2) * 2/3
    got = e2e.meteor_nltk([["a", "fast", "car"]], [[["a", "fast", "house"]]], wordnet=wordnet)
    assert got == pytest.approx((1 - 0.6 * 0.5**0.2) * 2 / 3, rel=1e-12)


def test_meteor_nltk_synonyms_are_looked_up_on_stems(wordnet):
    # NLTK quirk (documented in e2e.py): words left after the stem stage are *stems*, so WordNet
    # synonyms are looked up for "larg" and "large"~"big" is missed: 2 matches, 2 chunks, frag 1
    # -> (1 - .6) * 2/3.  If NLTK fixes this, this test fails: update the docs, then this value.
    got = e2e.meteor_nltk([["a", "large", "house"]], [[["a", "big", "house"]]], wordnet=wordnet)
    assert got == pytest.approx(0.4 * 2 / 3, rel=1e-12)


def test_meteor_stemming_and_best_reference(wordnet):
    # "cats" ~ "cat" by Porter stem; the better of the two references is taken
    got = e2e.meteor_nltk([["the", "cats"]], [[["dogs"], ["the", "cat"]]], wordnet=wordnet)
    assert got == pytest.approx(1 - 0.6 * (1 / 2) ** 0.2, rel=1e-12)


def test_meteor_nltk_defaults_reproduce_nltk_docs(wordnet):
    # NLTK's documented example (alpha .9, beta 3, gamma .5) -> 0.6944
    hyp = (
        "It is a guide to action which ensures that the military always obeys the commands of the party".lower().split()
    )
    ref = "It is a guide to action that ensures that the military will forever heed Party commands".lower().split()
    got = e2e.meteor_nltk([hyp], [[ref]], wordnet=wordnet, alpha=0.9, beta=3.0, gamma=0.5)
    assert round(got, 4) == 0.6944


def test_e2e_meteor_is_a_number_offline(wordnet, monkeypatch):
    monkeypatch.setattr(e2e, "meteor", _no_java)
    with pytest.warns(RuntimeWarning, match="Meteor 1.5 cannot run"):
        scores = e2e.score(
            ["The Vaults is a cheap pub."], [["The Vaults is an inexpensive pub.", "Cheap pub: The Vaults."]]
        )
    assert 0 < scores["meteor_nltk"] < 1 and "meteor" not in scores


def test_e2e_without_java_and_wordnet_gives_nan_meteor_nltk_and_warnings(monkeypatch):
    def unavailable(*args, **kwargs):
        raise wnmod.WordNetUnavailable("no WordNet")

    monkeypatch.setattr(e2e, "meteor", _no_java)
    monkeypatch.setattr(e2e, "meteor_nltk", unavailable)
    with pytest.warns(RuntimeWarning) as caught:
        scores = e2e.score(["a pub"], [["a pub"]])
    messages = " | ".join(str(w.message) for w in caught)
    assert "Meteor 1.5 cannot run" in messages and "meteor_nltk set to NaN" in messages
    assert scores["meteor_nltk"] != scores["meteor_nltk"] and scores["bleu"] > 0  # NaN, the rest computed


def _no_java(*args, **kwargs):
    raise MeteorUnavailable("no Java runtime on PATH")
