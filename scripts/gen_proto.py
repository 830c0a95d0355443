"""Generate the Python stubs of proto/ into mesh/ (the generated package).

Usage:
    python scripts/gen_proto.py          # regenerate mesh/ from proto/
    python scripts/gen_proto.py --check  # exit 1 if mesh/ differs from proto/

The stubs are committed so that installing Mesh needs no code generator; CI
runs --check so that a .proto change without regenerated stubs fails.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = "mesh"
INIT_TEXT = '"""Generated from proto/ by scripts/gen_proto.py. Do not edit."""\n'


def generate(out_dir: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into out_dir."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    bin_dir = Path(sys.executable).parent
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_DIR}", f"-I{well_known}",
        # The mypy-protobuf plugins sit beside the interpreter; name them so the
        # script works without an activated virtualenv.
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}", f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    done = subprocess.run(command, cwd=PROTO_DIR, capture_output=True, text=True)
    if done.returncode != 0:  # protoc's own chatter only matters when it fails
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"protoc failed with exit code {done.returncode}")
    package = out_dir / OUT_PACKAGE
    for directory in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text(INIT_TEXT)
    (package / "py.typed").write_text("")


def differences(left: Path, right: Path) -> list[str]:
    """Relative paths that differ between two generated trees."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + n for n in cmp.left_only + cmp.right_only + cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right, ignore=["__pycache__"]), "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs drift")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / OUT_PACKAGE
        committed = ROOT / OUT_PACKAGE
        if args.check:
            drift = differences(fresh, committed) if committed.exists() else ["mesh/"]
            if drift:
                print("generated stubs are out of date; run 'make proto' and commit:",
                      file=sys.stderr)
                for path in drift:
                    print(f"  {OUT_PACKAGE}/{path}", file=sys.stderr)
                return 1
            print("generated stubs match proto/")
            return 0
        shutil.rmtree(committed, ignore_errors=True)
        shutil.copytree(fresh, committed)
        print(f"generated {OUT_PACKAGE}/ from {PROTO_DIR.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
