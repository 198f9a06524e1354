"""A task's entry comes from its own directory's index, the same entry lm-eval's full index holds,
without building the full index (seconds per process); unknown names still get the closest ones."""

from __future__ import annotations

from functools import partial

import pytest

from ftlab.core.errors import FtlabError
from ftlab.data import lm_eval_catalog as catalog

SUITES = ["boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
          "gsm8k", "asdiv", "mathqa", "agieval_aqua_rat", "wikitext"]


def _counting(built: list, *args, **kwargs):
    built.append(kwargs)
    return catalog.lm_eval_tasks.TaskManager(*args, **kwargs)


@pytest.mark.slow
def test_local_entries_equal_the_full_index(monkeypatch):
    catalog.local_manager.cache_clear()
    built: list[dict] = []
    monkeypatch.setattr(catalog, "TaskManager", partial(_counting, built))
    local = {name: catalog.task_entry(name) for name in SUITES}
    assert built and all(k.get("include_defaults") is False for k in built)  # no full index was built
    assert all(catalog.local_manager(name).task_index[name] is local[name] for name in SUITES)
    monkeypatch.undo()
    full = catalog.task_manager().task_index  # built here unless an earlier test of this process did
    for name, entry in local.items():
        assert entry.yaml_path == full[name].yaml_path and entry.cfg == full[name].cfg, name
    with pytest.raises(FtlabError, match="closest: .*arc_easy"):
        catalog.task_entry("arc_easyy")
