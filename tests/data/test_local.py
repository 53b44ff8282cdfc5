"""The local source on the shared copies of the original release files (skipped if absent, unless CI=true)."""

from __future__ import annotations

import pytest

from rosa.data import DataError, eval_examples, get_spec, load_examples
from tests.data.conftest import dataset_cfg


def sizes(cfg) -> dict[str, int]:
    return {split: len(load_examples(cfg, split)[0]) for split in ("train", "validation", "test")}


def test_e2e_release_files(shared_data):
    cfg = dataset_cfg("e2e", source="local", path=str(shared_data / "e2e_nlg"))
    assert sizes(cfg) == {"train": 42_061, "validation": 4_672, "test": 4_693}
    test, report = load_examples(cfg, "test")
    assert report.malformed == 0 and report.origin.endswith("testset_w_refs.csv")
    unique = eval_examples(get_spec("e2e"), test)
    assert len(unique) == 630
    assert sum(len(u.references) for u in unique) <= 4_693 and all(u.references for u in unique)
    assert unique[0].prompt == "Input: name[Blue Spice], eatType[coffee shop], area[city centre] Output:"
    train, _ = load_examples(cfg, "train")
    assert all("\r" not in e.target for e in train[:2000])  # CRLF handled by the csv module


def test_gsm8k_full_train_and_carved_validation(shared_data):
    path = str(shared_data / "gsm8k")
    plain = dataset_cfg(
        "gsm8k", source="local", path=path, splits={"train": "train", "validation": None, "test": "test"}
    )
    train, _ = load_examples(plain, "train")
    assert len(train) == 7_473 and len(load_examples(plain, "test")[0]) == 1_319
    with pytest.raises(DataError, match="dataset.splits.validation: None"):
        load_examples(plain, "validation")
    carved = dataset_cfg("gsm8k", source="local", path=path)  # default splits: validation = carve:train
    assert sizes(carved) == {"train": 6_973, "validation": 500, "test": 1_319}
    carved_train, report = load_examples(carved, "train")
    validation, _ = load_examples(carved, "validation")
    assert report.carved_out == 500
    assert {e.id for e in carved_train}.isdisjoint(e.id for e in validation)
    assert {e.id for e in carved_train} | {e.id for e in validation} == {e.id for e in train}
    assert [e.id for e in validation] == [e.id for e in load_examples(carved, "validation")[0]]


def test_viggo_release_files(shared_data):
    cfg = dataset_cfg("viggo", source="local", path=str(shared_data / "viggo"))
    assert sizes(cfg) == {"train": 5_103, "validation": 714, "test": 1_083}
    train, _ = load_examples(cfg, "train")
    assert train[0].target.startswith("inform(name[Dirt: Showdown]") and train[0].prompt.endswith(
        "### Meaning representation:\n"
    )


def test_eli5_release_files(shared_data):
    cfg = dataset_cfg(
        "eli5",
        source="local",
        path=str(shared_data / "eli5"),
        splits={"train": "test", "validation": "validation2", "test": "validation2"},
    )
    assert sizes(cfg) == {"train": 5_411, "validation": 2_375, "test": 2_375}
    examples, _ = load_examples(cfg, "validation")
    assert all(e.prompt == "" and e.target for e in examples)


def test_eli5_missing_train_file_names_it(shared_data):
    cfg = dataset_cfg(
        "eli5",
        source="local",
        path=str(shared_data / "eli5"),
        splits={"train": "train", "validation": "validation2", "test": "test"},
    )
    with pytest.raises(DataError) as error:
        load_examples(cfg, "train")
    message = str(error.value)
    assert "\n" not in message
    assert str(shared_data / "eli5" / "eli5-category-train.json.gz") in message
    assert "eli5-category-test.json.gz" in message and "eli5-category-validation-2.json.gz" in message


def test_local_needs_a_directory(tmp_path):
    with pytest.raises(DataError, match="dataset.path: None"):
        load_examples(dataset_cfg("e2e", source="local"), "train")
    with pytest.raises(DataError, match="is not a directory"):
        load_examples(dataset_cfg("e2e", source="local", path=str(tmp_path / "nope")), "train")
    with pytest.raises(DataError, match="dataset.source: 'web'"):
        load_examples(dataset_cfg("e2e", source="web"), "train")
