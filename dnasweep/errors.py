"""User-facing errors. A ConfigError owns *every* problem found in one input, so the user
fixes them all in one go (torchtune style) instead of one per run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one key of one input."""

    key: str  # dotted path into the config, e.g. "model.router.top_k"
    message: str  # the rule that was broken, with the offending value
    fix: str = ""  # what to do about it (allowed values, a suggestion)

    def render(self) -> str:
        s = f"  {self.key}: {self.message}"
        return s + (f"\n      fix: {self.fix}" if self.fix else "")


class ConfigError(ValueError):
    """Raised with every problem of an input at once. The CLI prints it and exits with code 2."""

    def __init__(self, problems: list[Problem], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''}"
        super().__init__("\n".join([head, *(p.render() for p in self.problems)]))

    def __reduce__(self):
        # Pickled across processes (a Ray worker's error reaches the driver): rebuild from the
        # problems, not from the rendered text, which __init__ would take for a problem list.
        return (ConfigError, (self.problems, self.source))


def raise_if(problems: list[Problem], source: str = "config") -> None:
    """Raise a ConfigError when `problems` is non-empty."""
    if problems:
        raise ConfigError(problems, source)
