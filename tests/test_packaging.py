"""
The wheel users install: it ships the pricing table and the twistd plugin,
and building it prints no setuptools warning about them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_pricing_table_without_setuptools_warnings(tmp_path: Path) -> None:
    """
    C{lunaroute/data} is a package of its own, so setuptools does not warn that
    it "would be ignored", and the installed code loads the shipped table.
    """
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    output = build.stdout + build.stderr
    assert "absent from the `packages` configuration" not in output
    assert "Package would be ignored" not in output
    (wheel,) = (tmp_path / "dist").glob("lunaroute-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {
        "lunaroute/data/pricing.yaml",
        "lunaroute/py.typed",
        "twisted/plugins/lunaroute_plugin.py",
        "lunaroute/ui/static/app.css",
        "lunaroute/ui/static/app.js",
    } <= names
    # Load the table from the unpacked wheel alone (-P: not from the source tree).
    load = subprocess.run(
        [sys.executable, "-P", "-c",
         "import lunaroute.stats.pricing as p; t = p.PricingTable.load(); print(p.__file__, len(t.prices), t.price_for(\"claude-sonnet-4-5\") is not None)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert load.returncode == 0, load.stderr
    where, count, sonnet_priced = load.stdout.split()
    assert where.startswith(str(tmp_path / "site")) and int(count) > 10 and sonnet_priced == "True"
