"""A named registry: the extension points that are not op semantics (importance criteria, model
sources, export formats) are instances of :class:`Registry`, filled by a decorator in the module
that defines the entries and read through a small query API.

    CRITERIA = Registry("importance criterion")

    @CRITERIA.register("l1")
    class L1: ...

    CRITERIA.get("l1")      # the entry, or a one-line error naming the choices
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from core.errors import PruneStudioError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an entry under ``name``; a second entry of the same name is an error
        (two modules claiming one name is a bug, not an override)."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise PruneStudioError(f"unknown {self.kind} '{name}' (choose from "
                                   f"{', '.join(self._entries)})") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
