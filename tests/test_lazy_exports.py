"""The subpackages' lazy public names: each resolves to its defining module's object, an unknown
name is an AttributeError naming the package, and importing a name loads only its own module."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from .helpers import ROOT

PACKAGES = sorted(f"datamap.{p.parent.name}" for p in (ROOT / "src" /
"datamap").glob("*/__init__.py") if "_EXPORTS" in p.read_text())


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_is_its_modules_object(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        defining = importlib.import_module(module._EXPORTS[name])
        value = getattr(module, name)
        assert value is getattr(defining, name), name
        # defined there, not imported from a third module the table should name instead
        assert getattr(value, "__module__", defining.__name__) == defining.__name__, name


@pytest.mark.parametrize("package", PACKAGES)
def test_unknown_name_is_an_attribute_error(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'Nope'"):
        module.Nope  # noqa: B018
    assert not hasattr(module, "Nope")


def test_a_name_loads_only_its_module():
    # A fresh interpreter: the table half of dynamics must not pull torch or the recorder in.
    code = ("import sys\nfrom datamap.dynamics import read_dynamics\n"
            "print(sorted(m for m in ('torch', 'datamap.dynamics.recorder', "
            "'datamap.models.classifier') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
