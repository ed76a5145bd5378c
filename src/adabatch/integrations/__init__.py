"""Adaptive batch sizes inside the trainers people already use.

* `adabatch.integrations.lightning.AdaptiveBatchSize` — a Lightning ``Callback``
  (``pip install adabatch[lightning]``; ``pytorch_lightning`` or ``lightning.pytorch``).
* `adabatch.integrations.huggingface.AdaptiveBatchSizeCallback` — a
  ``transformers.TrainerCallback`` (``pip install adabatch[huggingface]``).

Importing this package imports neither framework; each submodule imports its own and says
which extra to install when it is missing or too old.
"""
