"""A run's evaluation: val loss and the task metric (``metrics.py``: ftlab's own fast scorer during
training, lm-eval's scores of the whole test split at the end) and the task metrics of ftlab's own
scorer (``scoring.py``: choice log-likelihoods, final-number match); a checkpoint checked against
a sparsity mask, and its 2:4 speed (``mask_validation.py``)."""
