"""Run mypy on the tensorwire package as it installs (tensorwire.server, tensorwire.client, ...).

    python scripts/typecheck.py

The folders install under one namespace through setuptools' package-dir mapping,
which mypy cannot follow in an editable install; this builds a tree of symlinks
under build/typecheck/ that mirrors the installed layout and checks that.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def build_tree() -> pathlib.Path:
    package_dirs: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    top = TREE / "tensorwire"
    top.mkdir(parents=True)
    for source in (ROOT / package_dirs["tensorwire"]).iterdir():
        if source.suffix in (".py", ".typed"):
            (top / source.name).symlink_to(source)
    for package, folder in package_dirs.items():
        if package != "tensorwire":
            (TREE / package.replace(".", "/")).symlink_to(ROOT / folder, target_is_directory=True)
    return TREE


def main() -> int:
    tree = build_tree()
    return subprocess.call([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "tensorwire"], cwd=tree)


if __name__ == "__main__":
    sys.exit(main())
