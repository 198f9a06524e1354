"""``reverse``: spell a pseudo-word backwards ("Reverse: abc\nAnswer:" -> " cba")."""

from __future__ import annotations

import random

from ftlab.data.task_base import Example, Task


class Reverse(Task):
    name = "reverse"
    option_keys = ("max_len",)

    def _word(self, rng: random.Random) -> str:
        n = rng.randint(2, int(self.options.get("max_len", 5)))
        return "".join(rng.choice("abcdefghij") for _ in range(n))

    def generate(self, n: int, rng: random.Random) -> list[Example]:
        return [Example(f"Reverse: {w}\nAnswer:", f" {w[::-1]}") for w in (self._word(rng) for _ in range(n))]
