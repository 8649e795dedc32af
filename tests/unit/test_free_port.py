"""Listening ports for test and demo servers come from below the ephemeral range, where
no outgoing connection's source port can take them between the pick and the bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rotator.devtools import devvault
from rotator.devtools.devvault import free_port


def test_a_free_port_is_below_the_ephemeral_range_and_can_be_bound() -> None:
    start = devvault._ephemeral_start()
    ports = {free_port() for _ in range(50)}
    assert all(20000 <= port < min(start, 32768) for port in ports), sorted(ports)
    assert len(ports) > 40                    # spread, so workers rarely pick alike
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_with_no_room_below_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    narrow = tmp_path / "ip_local_port_range"
    narrow.write_text("20500\t60999\n")
    monkeypatch.setattr(devvault, "_EPHEMERAL_RANGE", narrow)
    assert free_port() >= 1024
    monkeypatch.setattr(devvault, "_EPHEMERAL_RANGE", tmp_path / "absent")
    assert devvault._ephemeral_start() == 32768
