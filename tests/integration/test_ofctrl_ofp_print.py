"""ovs-ofctl's own decoder reads ofctrl's golden encodings the way we meant them.

Needs the ovs-ofctl binary only (no root, no running OVS).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from testbed.netns import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("ovs-ofctl") is None, reason="needs ovs-ofctl (openvswitch-common)"
    ),
]


def _load_goldens() -> ModuleType:
    # The golden messages live with the unit tests; load that file by path so
    # this module does not depend on how pytest put tests/unit on sys.path.
    path = Path(__file__).resolve().parents[1] / "unit" / "test_ofctrl_codec.py"
    spec = importlib.util.spec_from_file_location("ofctrl_goldens", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


goldens = _load_goldens()


@pytest.mark.parametrize(
    ("name", "golden", "text"),
    [(g[0], g[3], g[4]) for g in goldens.golden_messages()],
    ids=[g[0] for g in goldens.golden_messages()],
)
def test_ovs_decodes_golden_bytes_as_intended(name, golden, text):
    out = run(["ovs-ofctl", "ofp-print", golden]).stdout
    assert " ".join(out.split()) == text


def test_ovs_decodes_our_hello():
    out = run(["ovs-ofctl", "ofp-print", goldens.HELLO_GOLDEN]).stdout
    assert " ".join(out.split()) == "OFPT_HELLO (OF1.3) (xid=0x1): version bitmap: 0x04"
