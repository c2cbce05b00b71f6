"""Write generated/ from proto/: the only way generated code is produced.

    python tools/gen_protos.py          regenerate generated/utwin_proto
    python tools/gen_protos.py --check  exit 1 if generated/ differs from what proto/ gives

protoc writes imports by proto path (``from uprotocol.v1 import ...``); they are
rewritten under the project's own top-level package ``utwin_proto`` so the
generated modules never shadow another distribution's ``uprotocol`` package.
The .proto files are copied beside the modules generated from them.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GENERATED_DIR = ROOT / "generated"
PACKAGE = "utwin_proto"
_PROTO_ROOTS = ("uprotocol", "utwin")
_IMPORT_LINE = re.compile(rf"^(\s*)(from|import) ({'|'.join(_PROTO_ROOTS)})([. ])", re.MULTILINE)


def pinned_tools_version() -> str:
    """The grpcio-tools version pinned in pyproject.toml's dev extra."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["optional-dependencies"]["dev"]:
        name, _, version = requirement.partition("==")
        if name.strip() == "grpcio-tools":
            return version.strip()
    raise SystemExit("pyproject.toml: dev extra must pin grpcio-tools==X.Y.Z")


def _rewrite_imports(source: str) -> str:
    return _IMPORT_LINE.sub(rf"\1\2 {PACKAGE}.\3\4", source)


def generate(out_root: Path) -> None:
    """Run protoc over every file in proto/ and write a package under out_root."""
    from grpc_tools import protoc  # imported here: only this tool needs grpcio-tools

    package_dir = out_root / PACKAGE
    package_dir.mkdir(parents=True)
    proto_files = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include_dir = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include_dir}",
        f"--python_out={package_dir}",
        f"--pyi_out={package_dir}",
        f"--grpc_python_out={package_dir}",
        *proto_files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for module in sorted(package_dir.rglob("*.py*")):
        module.write_text(_rewrite_imports(module.read_text()))
    for directory in [package_dir, *sorted(p for p in package_dir.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text("")
    # Each .proto ships beside its modules, so the installed package is an include root for protoc.
    for proto_file in proto_files:
        shutil.copyfile(PROTO_DIR / proto_file, package_dir / proto_file)
    (package_dir / "py.typed").write_text("")


def _differences(expected: Path, actual: Path) -> list[str]:
    comparison = filecmp.dircmp(expected, actual)
    found = [f"missing: {name}" for name in comparison.left_only]
    found += [f"unexpected: {name}" for name in comparison.right_only]
    found += [f"differs: {name}" for name in comparison.diff_files]
    for name in comparison.funny_files:
        found.append(f"unreadable: {name}")
    for name, sub in comparison.subdirs.items():
        found += [f"{name}/{line}" for line in _differences(Path(sub.left), Path(sub.right))]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    options = parser.parse_args(argv)

    installed = importlib.metadata.version("grpcio-tools")
    pinned = pinned_tools_version()
    if installed != pinned:
        print(f"grpcio-tools {installed} is installed but pyproject.toml pins {pinned}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        target = GENERATED_DIR / PACKAGE
        if options.check:
            if not target.is_dir():
                print(f"{target.relative_to(ROOT)} is missing; run tools/gen_protos.py", file=sys.stderr)
                return 1
            problems = [line for line in _differences(fresh / PACKAGE, target) if "__pycache__" not in line]
            if problems:
                print("generated/ disagrees with proto/; run tools/gen_protos.py", file=sys.stderr)
                print("\n".join(f"  {line}" for line in problems), file=sys.stderr)
                return 1
            return 0
        if target.exists():
            shutil.rmtree(target)
        GENERATED_DIR.mkdir(exist_ok=True)
        shutil.copytree(fresh / PACKAGE, target)
    print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
