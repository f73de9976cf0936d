"""Names shared by the audit method and the ``retrain`` command (cheap to import)."""

#: model-version tags written by ``governance retrain --optimizer bort`` and read by the audit
TAG_PREFIX = "governance.bort."
TAG_OPTIMIZER = TAG_PREFIX + "optimizer"  # e.g. "BortAdamW"; its presence marks a Bort-trained version
TAG_GAMMA = TAG_PREFIX + "gamma"
TAG_AMPLITUDE = TAG_PREFIX + "amplitude"
TAG_INCLUDE_CLASSIFIER = TAG_PREFIX + "include_classifier"  # "true" when the last linear layer was constrained too
TAG_PARENT = TAG_PREFIX + "parent"  # models:/name/version the fine-tune started from
TAG_D_ORTH = TAG_PREFIX + "d_orth_mean"
TAG_D_ORTH_PARENT = TAG_PREFIX + "d_orth_mean_parent"

#: optimizers accepted by ``governance retrain --optimizer``
OPTIMIZERS = ("bort", "bort-adamw", "bort-sgd", "adamw", "sgd")
