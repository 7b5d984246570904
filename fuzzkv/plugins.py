"""Registries of fuzzkv's extension points (oracles, backends): its own parts, then every installed package's
registrations through an entry point group, loaded on first use.

Loading waits for the first lookup so that a plugin module may import fuzzkv's public modules (which hold the
registries) without finding them half-initialised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(MutableMapping[str, T], Generic[T]):
    """Registered ``kind`` objects by name: ``builtin`` first, in order, then the entry points of ``group``, each
    naming one such object. Two with one name, or an entry point that names something else, is an error."""

    def __init__(self, group: str, kind: type[T], builtin: Callable[[], tuple[T, ...]], name_of: Callable[[T], str]):
        self.group, self.kind, self._builtin, self._name_of = group, kind, builtin, name_of
        self._items: dict[str, T] | None = None

    def _loaded(self) -> dict[str, T]:
        if self._items is None:
            found: dict[str, T] = {}
            plugins = [(entry.value, entry.load()) for entry in entry_points(group=self.group)]
            for origin, item in [("fuzzkv", item) for item in self._builtin()] + plugins:
                if not isinstance(item, self.kind):
                    raise TypeError(f"the {self.group} entry point {origin} is a {type(item).__name__}, "
                                    f"not a {self.kind.__name__}")
                name = self._name_of(item)
                if name in found:
                    raise ValueError(f"two {self.group} registrations are named {name!r} (the second from {origin})")
                found[name] = item
            self._items = found
        return self._items

    def __getitem__(self, name: str) -> T:
        return self._loaded()[name]

    def __setitem__(self, name: str, item: T) -> None:
        self._loaded()[name] = item

    def __delitem__(self, name: str) -> None:
        del self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, {list(self)!r})"
