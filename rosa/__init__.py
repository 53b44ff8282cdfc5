"""rosa: a research harness for parameter-efficient fine-tuning of causal language models.

Sub-packages, one per concern:
  data        datasets, prompts, tokenisation        models      model and tokenizer loading
  methods     fft, lora, rosa-robust, spa, rosa-orthogonal
  kernels     sparse SpMM / SDDMM (Triton and PyTorch)
  training    the training loop, checkpoints, run directories
  evaluation  generation and metrics                 results     tables and figures
"""
import logging as _logging

# Version drift between unpinned dependencies prints lines that mean nothing to a user on every
# command: torchao's compiled extensions built for another torch ("Failed to load ..._C_mxfp8.so";
# we use only its pure-PyTorch NF4) and torch's deprecation of register_constant() for enums that
# torchao registers. Raise just those two loggers to ERROR, before anything imports torchao.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
