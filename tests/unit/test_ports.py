"""The state store's ports: the SQL repository and the in-memory fake implement all of them.

mypy checks the package against the Protocols; the fake lives in tests, which mypy does not
check, so this test keeps the fake a faithful stand-in (same methods, same parameters).
"""

from __future__ import annotations

import inspect

import pytest

from rotator.adapters.sql.repository import SqlRepository
from rotator.core.ports import RotationReader, RotationRepository
from tests.fakes import MemoryRepository


def _members(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")}


@pytest.mark.parametrize("port", [RotationRepository, RotationReader])
@pytest.mark.parametrize("implementation", [SqlRepository, MemoryRepository])
def test_each_implementation_has_every_method_of_the_port(port: type,
                                                          implementation: type) -> None:
    members = _members(port)
    assert members, f"{port.__name__} declares no methods"
    for name, wanted in members.items():
        method = getattr(implementation, name, None)
        assert callable(method), f"{implementation.__name__} lacks {port.__name__}.{name}"
        got = inspect.signature(method)
        assert list(got.parameters) == list(wanted.parameters), (
            f"{implementation.__name__}.{name}{got} differs from the port's {wanted}")
