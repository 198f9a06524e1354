"""The ground every package stands on: the one-line error (``errors``), atomic writes (``io``),
console logging (``console``), signal handling (``signals``), the write-failure report
(``writefail``) and the registry base that every extension point uses (``plugins``). It imports
nothing else of ftlab, so any package may import it."""
