"""Shared parts of the training recipes (``recipes/twopcnet.py``, ``recipes/mic.py``).

Each file does one thing: ``config`` (yaml + ``key=value`` overrides, strict), ``dist`` (torchrun
set-up, collectives), ``data`` (resumable sharded endless batches), ``ema`` (mean teacher),
``checkpoint`` (atomic save/load, RNG state), ``logger`` (metrics.jsonl, curves.png, JSON outputs),
``evaluate`` (mAP / mIoU loops), ``bn`` (BatchNorm running statistics: keep them to chosen
forwards, or re-estimate them). Method-specific parts (NightAug, ClassMix, masking, pseudo-labels)
sit in files of their own beside them.
"""
