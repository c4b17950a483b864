"""Build glue: package discovery for the core/ and plugins/ folders, and the C indexer."""
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent


def _packages(root: str, name: str) -> dict[str, str]:
    found = {}
    for init in sorted((HERE / root).rglob("__init__.py")):
        rel = init.parent.relative_to(HERE / root)
        dotted = ".".join((name, *rel.parts)) if rel.parts else name
        found[dotted] = str(init.parent.relative_to(HERE))
    return found


package_dir = {**_packages("core", "pcapwire"), **_packages("plugins", "pcapwire.plugins")}

native = Extension(
    "pcapwire._native",
    sources=sorted(str(p.relative_to(HERE)) for p in (HERE / "core" / "native").glob("*.c")),
    include_dirs=["core/native"],
    libraries=["pcap", "sqlite3"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-fno-strict-aliasing"],
)

setup(packages=sorted(package_dir), package_dir=package_dir, ext_modules=[native])
