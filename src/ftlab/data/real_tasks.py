"""BoolQ, HellaSwag and GSM8K read from local files in the layouts of their public releases.

The files are the researcher's own copies (``task.path``): JSONL as released by the authors, or
the parquet shards of the public Hugging Face mirrors, with the field names as published. Nothing
is downloaded and no dataset text ships with ftlab; tests generate small files in these schemas.

Prompts and choices are built exactly as EleutherAI's lm-evaluation-harness 0.4 renders them
(``super_glue/boolq``, ``hellaswag``, ``gsm8k`` task configs), so the model is trained on the
format its final numbers are scored in (``ftlab.harness``; tests compare against lm-eval's own
rendered requests).

- BoolQ (google-research-datasets/boolean-questions; HF ``google/boolq``; or ``aps/super_glue``
  boolq): ``question``, ``passage`` and ``answer`` (bool) or ``label`` (0/1). Prompt
  ``"{passage}\nQuestion: {question}?\nAnswer:"``, choices " no"/" yes".
- HellaSwag (rowanz/hellaswag ``hellaswag_*.jsonl``; HF ``Rowan/hellaswag``): ``activity_label``,
  ``ctx_a``, ``ctx_b``, ``endings`` (list), ``label`` (int in the JSONL, a digit string in the
  parquet). Query ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``.
- GSM8K (openai/grade-school-math ``*.jsonl``; HF ``openai/gsm8k`` main): ``question``,
  ``answer`` (worked solution ending in ``#### N``). Prompt ``"Question: {question}\nAnswer:"``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ftlab.core.errors import FtlabError
from ftlab.data.task_base import Example, HarnessBenchmark, Task, numbered_jsonl, register_task

PARQUET_SUFFIXES = (".parquet", ".pq")
FINAL_ANSWER_MARK = "####"


def read_rows(path: Path, required: tuple[str, ...]) -> list[tuple[str, dict]]:
    """``(where, row)`` pairs of a JSONL or parquet file; ``where`` names the file and line/row
    so that a bad value deeper in a task's parser can still point at its source."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path, required)
    return [(f"{path}:{n}", r) for n, r in numbered_jsonl(path, required)]


def _read_parquet(path: Path, required: tuple[str, ...]) -> list[tuple[str, dict]]:
    import pandas as pd  # optional heavy dependency: only for .parquet files

    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt/foreign file
        raise FtlabError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from err
    for key in required:
        if key not in frame.columns:
            raise FtlabError(f"{path}: missing field {key!r} (required: {list(required)}; "
                             f"columns: {list(frame.columns)})")
    if frame.empty:
        raise FtlabError(f"{path}: no examples")
    out = []
    for i, row in enumerate(frame.to_dict(orient="records"), start=1):
        for key in required:
            if _is_null(row[key]):
                raise FtlabError(f"{path}: row {i}: field {key!r} is empty (required: {list(required)})")
        out.append((f"{path}: row {i}", row))
    return out


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):  # arrays: not a scalar null
        return False


def _bad(where: str, key: str, value: Any, allowed: str) -> FtlabError:
    return FtlabError(f"{where}: field {key!r}={value!r} is invalid: {allowed}")


def _text(where: str, row: dict, key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise _bad(where, key, value, "a string")
    return value


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: WikiHow's `` [title]`` becomes ``". "``, other bracketed
    markup (``[step]``...) is dropped, double spaces become one."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


class RealTask(Task):
    """A published benchmark read from a local file: ``required`` fields, ``parse(where, row)``, and
    its :class:`HarnessBenchmark` facts in ``harness`` (lm-eval's task, the headline key and variant)."""

    required: tuple[str, ...] = ()

    @staticmethod
    def parse(where: str, row: dict) -> Example:  # each task: one row -> one Example
        raise NotImplementedError

    @staticmethod
    def harness_row(row: dict) -> dict:
        """A row in the layout lm-eval's config of the task's ``harness.lm_eval_task`` reads (its HF mirror's)."""
        return row

    def load_file(self, path: Path) -> list[Example]:
        return [self.parse(w, r) for w, r in read_rows(path, self.required)]

    @classmethod
    def harness_rows(cls, path: Path) -> list[dict]:
        """The rows of ``path`` as published, each validated by the task's parser (so a bad row fails
        here with its file, line and field), with numpy values turned into plain JSON types, in the
        layout lm-eval's config of the task reads."""
        out = []
        for where, row in read_rows(path, cls.required):
            cls.parse(where, row)
            out.append(cls.harness_row({k: _plain(v) for k, v in row.items()}))
        return out


def _plain(value: Any) -> Any:
    """numpy scalars/arrays of a parquet row -> Python values (for JSON)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


# -- BoolQ ---------------------------------------------------------------------------------

BOOLQ_CHOICES = (" no", " yes")


def boolq_label(where: str, row: dict) -> int:
    """0/1 from the release's ``answer`` (bool) or SuperGLUE's ``label`` (int)."""
    if "answer" in row and not _is_null(row["answer"]):
        answer = row["answer"].item() if hasattr(row["answer"], "item") else row["answer"]
        if not isinstance(answer, bool):
            raise _bad(where, "answer", answer, "true or false")
        return int(answer)
    if "label" in row and not _is_null(row["label"]):
        label = row["label"].item() if hasattr(row["label"], "item") else row["label"]
        if isinstance(label, bool) or label not in (0, 1):
            raise _bad(where, "label", label, "0 (no) or 1 (yes)")
        return int(label)
    raise FtlabError(f"{where}: missing field 'answer' (true/false; or SuperGLUE's 'label' 0/1)")


def boolq_example(where: str, row: dict) -> Example:
    label = boolq_label(where, row)
    prompt = f"{_text(where, row, 'passage')}\nQuestion: {_text(where, row, 'question')}?\nAnswer:"
    return Example(prompt, BOOLQ_CHOICES[label], choices=BOOLQ_CHOICES, label=label)


def boolq_superglue_row(row: dict) -> dict:
    """lm-eval's ``boolq`` (SuperGLUE's) reads ``label`` 0/1; the original release has ``answer``."""
    return {**row, "label": boolq_label("row", row)}


class BoolQ(RealTask):
    name = "boolq"
    harness = HarnessBenchmark("boolq", metrics=("accuracy", "exact_match"))
    multiple_choice = True
    harness_row = staticmethod(boolq_superglue_row)
    metric = "accuracy"
    option_keys = ("length_normalize",)  # accuracy: divide each choice's log-likelihood by its length
    required = ("question", "passage")
    parse = staticmethod(boolq_example)


# -- HellaSwag -----------------------------------------------------------------------------

def hellaswag_example(where: str, row: dict) -> Example:
    endings = row["endings"]
    if hasattr(endings, "tolist"):  # numpy array from parquet
        endings = endings.tolist()
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
        raise _bad(where, "endings", endings, "a list of at least 2 strings")
    label = row["label"]
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label)
    if hasattr(label, "item"):
        label = label.item()
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
        raise _bad(where, "label", row["label"], f"an index in [0, {len(endings) - 1}]")
    ctx = _text(where, row, "ctx_a") + " " + _text(where, row, "ctx_b").capitalize()
    prompt = hellaswag_preprocess(_text(where, row, "activity_label") + ": " + ctx)
    choices = tuple(" " + hellaswag_preprocess(e) for e in endings)
    return Example(prompt, choices[label], choices=choices, label=label)


class HellaSwag(RealTask):
    name = "hellaswag"
    harness = HarnessBenchmark("hellaswag", metrics=("accuracy",))
    multiple_choice = True
    metric = "accuracy"
    option_keys = ("length_normalize",)  # accuracy: divide each choice's log-likelihood by its length
    required = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
    parse = staticmethod(hellaswag_example)


# -- GSM8K ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str | None:
    """Canonical form of a number as written in a solution: no ``$`` or thousands commas,
    no trailing ``.0``; ``None`` when the text holds no number."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    raw = match.group(0).replace("$", "").replace(",", "")
    if "." in raw:
        raw = raw.rstrip("0").rstrip(".")
    if raw in ("-0", ""):
        raw = "0"
    return raw


def final_number(text: str) -> str | None:
    """The answer a GSM8K-style solution commits to: the number after the last ``####``, else the
    last number in the text (a model may stop before writing the marker)."""
    if FINAL_ANSWER_MARK in text:
        tail = text.rsplit(FINAL_ANSWER_MARK, 1)[1]
        found = normalize_number(tail)
        if found is not None:
            return found
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def gsm8k_example(where: str, row: dict) -> Example:
    answer = _text(where, row, "answer")
    if FINAL_ANSWER_MARK not in answer or normalize_number(answer.rsplit(FINAL_ANSWER_MARK, 1)[1]) is None:
        raise _bad(where, "answer", answer[-40:], f"a solution ending in '{FINAL_ANSWER_MARK} <number>'")
    prompt = f"Question: {_text(where, row, 'question')}\nAnswer:"
    return Example(prompt, " " + answer)


class GSM8K(RealTask):
    name = "gsm8k"
    harness = HarnessBenchmark("gsm8k", headline_key="eval_exact_match", headline_variant="exact_match,strict-match",
                               metrics=("final_number", "exact_match"))
    metric = "final_number"
    option_keys = ("num_fewshot", "fewshot_path")  # the final lm-eval scoring's shots
    required = ("question", "answer")
    parse = staticmethod(gsm8k_example)


for _cls in (BoolQ, HellaSwag, GSM8K):
    register_task(_cls)
