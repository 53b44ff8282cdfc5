"""Datasets, prompts and tokenisation: one module per dataset (e2e, eli5, gsm8k, sql, viggo).

    spec = get_spec("e2e")                                   # DatasetSpec: hub id, prompt, decoding...
    examples, report = load_examples(dataset_cfg, "train")   # list[Example], LoadReport
    features, stats = build_train_features(examples, tokenizer, spec, max_length, loss_on)
    batch = collate_batch(features, pad_id)                  # input_ids, attention_mask, labels
    unique = eval_examples(spec, examples)                   # one per prompt, references merged

Module map: schema (types), readers (release file formats), loading (sources, split carving,
row checks), features (tokenisation, ELI5 blocks, collation), registry (DATASETS: every module
here that defines ``SPEC``). A dataset module also owns its scoring: ``spec.metrics`` (headline first),
``spec.postprocess`` and ``spec.score``.
"""

from rosa.data.features import build_train_features, collate_batch
from rosa.data.loading import eval_examples, load_examples
from rosa.data.registry import DATASETS, get_spec
from rosa.data.spec import DataError, DatasetSpec, Example, FeatureStats, LoadReport

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "Example",
    "FeatureStats",
    "LoadReport",
    "build_train_features",
    "collate_batch",
    "eval_examples",
    "get_spec",
    "load_examples",
]
