"""rosa: a research harness for parameter-efficient fine-tuning of causal language models.

Sub-packages, one per concern:
  data        datasets, prompts, tokenisation        models      model and tokenizer loading
  methods     fft, lora, rosa-robust, spa, rosa-orthogonal
  kernels     sparse SpMM / SDDMM (Triton and PyTorch)
  training    the training loop, checkpoints, run directories
  evaluation  generation and metrics                 results     tables and figures
"""
