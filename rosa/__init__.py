"""rosa: a research harness for parameter-efficient fine-tuning of causal language models.

Layers, each importing only those above it (docs/architecture.md; tests/test_layering.py):
  leaves      atomic (files), runs (run folders), distributed, schema (config fields), metrics (scorers)
  data        datasets: one module each (spec, prompt, scoring)      models   model and tokenizer loading
  kernels     sparse SpMM / SDDMM (Triton and PyTorch)
  methods     one module each (fft, lora, rosa-robust + spa, rosa-orthogonal, peft, ...); build_model
  config      the run's schema and validation             evaluation   generation, metrics, export
  training    the loop, checkpoints, preflight            results      tables and figures
  cli, jobs   train.py's command line; jobs.yaml grids
"""

import logging as _logging

# Version drift between unpinned dependencies prints lines that mean nothing to a user on every
# command: torchao's compiled extensions built for another torch ("Failed to load ..._C_mxfp8.so";
# we use only its pure-PyTorch NF4) and torch's deprecation of register_constant() for enums that
# torchao registers. Raise just those two loggers to ERROR, before anything imports torchao.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
