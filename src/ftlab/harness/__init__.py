"""BoolQ, HellaSwag and GSM8K scored by EleutherAI's lm-evaluation-harness itself.

Papers report these benchmarks with lm-eval; to put ftlab's numbers next to theirs, the final
numbers of a run (and ``python -m ftlab.evaluate``) come from lm-eval's own evaluator, task logic,
filters and metrics, run on the in-memory model through lm-eval's ``HFLM`` wrapper:

- :mod:`ftlab.data.benchmark_config` - ftlab's task configs (``tasks/*.yaml``: lm-eval's configs with
  ``dataset_path``/``data_files`` pointing at the researcher's local files) and the data files
  of one evaluation;
- :mod:`ftlab.harness.records` - lm-eval's result dict -> ftlab's metric records (value, stderr,
  n, n-shot, variant) and the headline ``eval_accuracy`` / ``eval_exact_match``;
- :mod:`ftlab.harness.score` - one evaluation of a model on a task.
"""
