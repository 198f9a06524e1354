"""Fused trials: the trials of a sweep that share a frozen base train in one forward.

Every adapted linear computes the frozen product once over the concatenated micro-batches of the
K trials and adds each trial's own low-rank update to that trial's rows (:mod:`ftlab.fused.layer`);
each trial's adapter is built by its own adapter family and then lent to the fused layer
(:mod:`ftlab.fused.build`); batches are concatenated and losses taken per trial over its own tokens
(:mod:`ftlab.fused.batch`). Because trial k's loss depends only on its rows, and those rows depend
only on the frozen base and adapter k, one backward of the sum of the trial losses gives every
adapter exactly the gradient of its own solo run.
"""
