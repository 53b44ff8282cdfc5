"""Offline WordNet 3.0 for METEOR (NLTK's ``WordNetCorpusReader``), without ``nltk.download``.

Set-up on a fresh Debian/Ubuntu machine (once, as root)::

    apt-get install -y --no-install-recommends wordnet-base   # WordNet 3.0 files in /usr/share/wordnet
    python -m rosa.metrics.wordnet                            # optional: builds <repo>/.nltk_data now

:func:`ensure_wordnet` finds or builds an NLTK-layout WordNet (``corpora/wordnet/``) in this order:

1. an existing NLTK WordNet (``nltk.data.find('corpora/wordnet')`` over ``nltk_data_dir`` and
   ``nltk.data.path``, which includes ``$NLTK_DATA``);
2. a build in ``<nltk_data_dir>/corpora/wordnet/`` from the system WordNet 3.0 database
   (``/usr/share/wordnet``, Debian's ``wordnet-base``): the files are copied (about 28 MB; the
   path sandbox of NLTK >= 3.9 refuses symlinks and hard links) and the ``lexnames`` file, which Debian does not ship but NLTK requires, is written;
3. ``nltk.download('wordnet', download_dir=nltk_data_dir)`` (works only with internet);
4. otherwise :class:`WordNetUnavailable` with a one-line fix.

The default ``nltk_data_dir`` is ``<repo>/.nltk_data`` (git-ignored).  ``omw-1.4`` and ``punkt``
are not needed: METEOR calls the English WordNet directly and we tokenise ourselves.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import warnings
from functools import lru_cache
from pathlib import Path

__all__ = [
    "ensure_wordnet",
    "load_wordnet",
    "WordNetUnavailable",
    "DEFAULT_NLTK_DATA",
    "SYSTEM_WORDNET_DIRS",
    "LEXNAMES",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NLTK_DATA = REPO_ROOT / ".nltk_data"
SYSTEM_WORDNET_DIRS = (
    "/usr/share/wordnet",
    "/usr/share/wordnet/dict",
    "/usr/local/WordNet-3.0/dict",
    "/usr/local/share/wordnet",
)
_REQUIRED = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")) + tuple(
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")
)
_OPTIONAL = ("cntlist.rev", "index.sense", "sentidx.vrb", "sents.vrb", "lexnames", "LICENSE", "README", "citation.bib")
_FIX = (
    "WordNet 3.0 (needed for METEOR) not found: run `apt-get install -y --no-install-recommends wordnet-base` "
    "(Debian/Ubuntu) or `python -m nltk.downloader -d {dir} wordnet`, then retry"
)

# WordNet 3.0 lexicographer files (wnintro/lexnames(5WN)): number, name, syntactic category
# (1 noun, 2 verb, 3 adjective, 4 adverb).  NLTK reads this list to name synsets' lexnames.
_LEXNAME_LIST = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
LEXNAMES = "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAME_LIST))
assert len(_LEXNAME_LIST) == 45


class WordNetUnavailable(RuntimeError):
    """WordNet could not be found, built or downloaded."""


def _authorise(nltk_data_dir: Path) -> None:
    """Put ``nltk_data_dir`` on ``nltk.data.path``: NLTK >= 3.9 only opens files under its data roots."""
    import nltk

    if str(nltk_data_dir) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(nltk_data_dir))


def _find_nltk_wordnet(nltk_data_dir: Path):
    import nltk

    try:
        return nltk.data.find("corpora/wordnet", paths=[str(nltk_data_dir), *nltk.data.path])
    except LookupError:
        return None


def _system_wordnet_dir() -> Path | None:
    for d in SYSTEM_WORDNET_DIRS:
        p = Path(d)
        if all((p / f).is_file() for f in _REQUIRED):
            return p
    return None


def _build_from_system(src: Path, nltk_data_dir: Path) -> Path:
    target = nltk_data_dir / "corpora" / "wordnet"
    tmp = nltk_data_dir / "corpora" / f".wordnet.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in _REQUIRED + _OPTIONAL:
        if not (src / name).is_file():
            continue
        # a plain copy (~28 MB): NLTK >= 3.9 refuses symlinks out of its data roots and hard links
        shutil.copyfile(src / name, tmp / name)
    if not (tmp / "lexnames").exists():
        (tmp / "lexnames").write_text(LEXNAMES, encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # built concurrently by another process, or a stale partial target
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "lexnames").is_file():
            raise
    return target


def _download(nltk_data_dir: Path) -> bool:
    import nltk

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return bool(nltk.download("wordnet", download_dir=str(nltk_data_dir), quiet=True, raise_on_error=False))
    except Exception:  # noqa: BLE001 - any network failure means "not available"
        return False
    finally:
        socket.setdefaulttimeout(old)


def ensure_wordnet(nltk_data_dir: str | os.PathLike | None = None, *, allow_download: bool = True):
    """Return the root of a usable NLTK WordNet (a ``str`` path, or an NLTK path pointer into a zip).

    Raises :class:`WordNetUnavailable` (one line, with the fix) when none can be found or made.
    """
    nltk_data_dir = Path(nltk_data_dir) if nltk_data_dir is not None else DEFAULT_NLTK_DATA
    _authorise(nltk_data_dir)
    found = _find_nltk_wordnet(nltk_data_dir)
    if found is not None:
        return found
    src = _system_wordnet_dir()
    if src is not None:
        try:
            return str(_build_from_system(src, nltk_data_dir))
        except OSError as exc:
            raise WordNetUnavailable(f"cannot build {nltk_data_dir}/corpora/wordnet from {src}: {exc}") from exc
    if allow_download and _download(nltk_data_dir):
        found = _find_nltk_wordnet(nltk_data_dir)
        if found is not None:
            return found
    raise WordNetUnavailable(_FIX.format(dir=nltk_data_dir))


@lru_cache(maxsize=4)
def load_wordnet(nltk_data_dir: str | None = None, allow_download: bool = True):
    """An English-only ``WordNetCorpusReader`` over :func:`ensure_wordnet`'s root; cached.

    Multilingual (OMW) support is switched off: NLTK's constructor otherwise builds a sense-key
    map from ``index.sense``, a file Debian's ``wordnet-base`` lacks and METEOR never uses.
    """
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # no OMW: no cross-version sense-key mapping
            return None

    root = ensure_wordnet(nltk_data_dir, allow_download=allow_download)
    with warnings.catch_warnings():  # "multilingual functions are not available": intended
        warnings.simplefilter("ignore")
        return EnglishWordNet(root, None)


def main(argv: list[str] | None = None) -> int:
    """``python -m rosa.metrics.wordnet [NLTK_DATA_DIR]``: set up WordNet, print where."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        root = ensure_wordnet(argv[0] if argv else None)
        wn = load_wordnet(argv[0] if argv else None)
        n = len(wn.synsets("dog"))
    except WordNetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"WordNet ready at {root} ({n} synsets for 'dog')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
