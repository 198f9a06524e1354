"""Where the jobs of a sweep run, beyond the local machine. (The checks ``python -m ftlab`` runs
before launching live a floor above, in :mod:`ftlab.preflight.launch`.)

- :mod:`~ftlab.launchers.slurm`: checks for ``hydra/launcher=slurm`` (hydra-submitit-launcher) and
  the resume-on-requeue rule.
- :mod:`~ftlab.launchers.cerebras_options`, :mod:`~ftlab.launchers.cerebras_params`,
  :mod:`~ftlab.launchers.cerebras_job`: ``hydra/launcher=cerebras`` (the plugin itself lives in
  ``hydra_plugins.ftlab_cerebras_launcher``): options, config -> ModelZoo YAML, one cszoo job.
"""
