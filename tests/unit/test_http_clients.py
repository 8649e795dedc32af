"""Every outbound HTTP client of the product is built by ``rotator.adapters.http``.

The developer tools (the demo seeding a throwaway OpenBao, its health poll) and the
emulator's docstring example talk to local servers of their own and are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rotator"
FACTORY = PACKAGE / "adapters" / "http.py"
OUTSIDE_THE_PRODUCT = (PACKAGE / "devtools", PACKAGE / "emulator")
CLIENT = re.compile(r"\b(?:httpx\.(?:Client|AsyncClient|get|post|put|delete|request|stream)"
                    r"|hvac\.Client|requests\.(?:Session|get|post|put|delete|request))\(")


def test_no_module_but_the_factory_builds_an_http_client() -> None:
    builders = [path.relative_to(PACKAGE.parent).as_posix()
                for path in PACKAGE.rglob("*.py")
                if path != FACTORY and not path.is_relative_to(OUTSIDE_THE_PRODUCT[0])
                and not path.is_relative_to(OUTSIDE_THE_PRODUCT[1])
                and CLIENT.search(path.read_text(encoding="utf-8"))]
    assert builders == []
    assert CLIENT.search(FACTORY.read_text(encoding="utf-8"))
